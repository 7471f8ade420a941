// Valid UTF-8 in every proto string field nvfp4d stores or sends.
//
// proto3 `string` fields must hold valid UTF-8: a client (C++ or Python) refuses to parse a message
// that does not ("No message returned for unary request", "Exception deserializing response"),
// and so does the job journal's replay. Names from checkpoints (tensor names, file names) and the
// error messages that quote them can hold any bytes, so every Job is passed through
// EscapeInvalidUtf8Fields before it is kept, saved or sent: invalid bytes become `\xNN`
// (nvfp4::EscapeInvalidUtf8, base/str_util.h); valid text is unchanged.
#ifndef NVFP4_SERVER_UTF8_FIELDS_H_
#define NVFP4_SERVER_UTF8_FIELDS_H_

#include <string_view>

#include "google/protobuf/message.h"

namespace nvfp4::server {

// Escapes the invalid UTF-8 of every `string` field of `msg`, nested messages, repeated fields and
// maps included (`bytes` fields are left alone). Returns how many strings it changed.
int EscapeInvalidUtf8Fields(google::protobuf::Message* msg);

// Parses `bytes` into `msg` (cleared first) like ParseFromArray, but a record that is refused only
// because a string field holds invalid UTF-8 (one written before the escaping above, e.g. by an
// older nvfp4d) is recovered field by field: such strings are kept escaped, and a field that still
// cannot be read is dropped (counted in *dropped when not null). Returns false only when `bytes`
// is not a protobuf wire-format message at all.
bool ParseRepairingUtf8(std::string_view bytes, google::protobuf::Message* msg,
                        int* dropped = nullptr);

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_UTF8_FIELDS_H_
