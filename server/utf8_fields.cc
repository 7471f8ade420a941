#include "server/utf8_fields.h"

#include <string>

#include "base/str_util.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/unknown_field_set.h"

namespace nvfp4::server {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

// Merges the fields of `fields` into `msg` one by one (see ParseRepairingUtf8).
void MergeRepairing(const UnknownFieldSet& fields, Message* msg, int* dropped) {
  const Reflection* r = msg->GetReflection();
  for (int i = 0; i < fields.field_count(); ++i) {
    const UnknownField& f = fields.field(i);
    const FieldDescriptor* fd = msg->GetDescriptor()->FindFieldByNumber(f.number());
    if (fd != nullptr && f.type() == UnknownField::TYPE_LENGTH_DELIMITED) {
      if (fd->type() == FieldDescriptor::TYPE_STRING) {
        const std::string s = EscapeInvalidUtf8(f.length_delimited());
        if (fd->is_repeated()) {
          r->AddString(msg, fd, s);
        } else {
          r->SetString(msg, fd, s);
        }
        continue;
      }
      if (fd->type() == FieldDescriptor::TYPE_MESSAGE) {
        UnknownFieldSet inner;
        if (!inner.ParseFromString(f.length_delimited())) {
          if (dropped != nullptr) ++*dropped;
          continue;
        }
        Message* sub = fd->is_repeated() ? r->AddMessage(msg, fd) : r->MutableMessage(msg, fd);
        MergeRepairing(inner, sub, dropped);
        continue;
      }
    }
    // Scalars, enums, packed fields, bytes and unknown numbers: as they are.
    UnknownFieldSet one;
    one.AddField(f);
    std::string wire;
    if (!one.SerializeToString(&wire) || !msg->MergeFromString(wire)) {
      if (dropped != nullptr) ++*dropped;
    }
  }
}

}  // namespace

int EscapeInvalidUtf8Fields(Message* msg) {
  const Reflection* r = msg->GetReflection();
  std::vector<const FieldDescriptor*> set;
  r->ListFields(*msg, &set);
  int changed = 0;
  for (const FieldDescriptor* fd : set) {
    if (fd->type() == FieldDescriptor::TYPE_STRING) {
      if (fd->is_repeated()) {
        for (int i = 0; i < r->FieldSize(*msg, fd); ++i) {
          const std::string s = r->GetRepeatedString(*msg, fd, i);
          if (IsValidUtf8(s)) continue;
          r->SetRepeatedString(msg, fd, i, EscapeInvalidUtf8(s));
          ++changed;
        }
      } else {
        const std::string s = r->GetString(*msg, fd);
        if (IsValidUtf8(s)) continue;
        r->SetString(msg, fd, EscapeInvalidUtf8(s));
        ++changed;
      }
    } else if (fd->type() == FieldDescriptor::TYPE_MESSAGE) {
      if (fd->is_repeated()) {
        for (int i = 0; i < r->FieldSize(*msg, fd); ++i) {
          changed += EscapeInvalidUtf8Fields(r->MutableRepeatedMessage(msg, fd, i));
        }
      } else {
        changed += EscapeInvalidUtf8Fields(r->MutableMessage(msg, fd));
      }
    }
  }
  return changed;
}

bool ParseRepairingUtf8(std::string_view bytes, Message* msg, int* dropped) {
  msg->Clear();
  if (msg->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return true;
  msg->Clear();
  UnknownFieldSet fields;
  if (!fields.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return false;
  MergeRepairing(fields, msg, dropped);
  return true;
}

}  // namespace nvfp4::server
