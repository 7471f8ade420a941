#include "pipeline/resume.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "base/le_codec.h"
#include "base/status_macros.h"
#include "base/str_util.h"
#include "formats/random_access_source.h"
#include "formats/safetensors.h"

namespace nvfp4::pipeline {
namespace {

// Version 2 adds TensorMetrics::gptq_dampening per module; version 1 records still decode.
constexpr uint8_t kVersion = 3;
constexpr uint8_t kVersionWithoutWarnings = 2;
constexpr uint8_t kVersionWithoutGptq = 1;

}  // namespace

std::string EncodeJournaledUnit(const JournaledUnit& u) {
  LeWriter e;
  e.U8(kVersion);
  e.Str(u.plan);
  e.I64(u.unit);
  e.Str(u.name);
  e.U64(u.bytes_in);
  e.U64(u.bytes_out);
  e.U32(static_cast<uint32_t>(u.tensors.size()));
  for (const JournaledTensor& t : u.tensors) {
    e.Str(t.name);
    e.Str(t.file);
    e.U64(t.offset);
    e.U64(t.size);
    e.Str(t.sha256);
  }
  e.U32(static_cast<uint32_t>(u.modules.size()));
  for (const ModuleResult& m : u.modules) {
    e.Str(m.module);
    e.Str(m.group);
    e.I64(m.rows);
    e.I64(m.cols);
    e.F32(m.global_scale);
    e.U8(m.input_amax.has_value() ? 1 : 0);
    e.F32(m.input_amax.value_or(0.0f));
    const TensorMetrics& x = m.metrics;
    e.F64(x.nmse);
    e.F64(x.sqnr_db);
    e.F64(x.max_abs_err);
    e.F64(x.rtn_nmse);
    e.F64(x.nmse_vs_rtn);
    e.U8(x.output_nmse.has_value() ? 1 : 0);
    e.F64(x.output_nmse.value_or(0.0));
    e.I64(x.iterations);
    e.F64(x.gptq_dampening);
  }
  e.U32(static_cast<uint32_t>(u.warnings.size()));
  for (const std::string& w : u.warnings) e.Str(w);
  return e.Take();
}

absl::StatusOr<JournaledUnit> DecodeJournaledUnit(std::string_view bytes) {
  LeReader d(bytes);
  const uint8_t version = d.U8();
  if (d.ok() && version != kVersion && version != kVersionWithoutWarnings &&
      version != kVersionWithoutGptq) {
    return absl::DataLossError(absl::StrCat("journaled unit: unknown version ", version));
  }
  JournaledUnit u;
  u.plan = d.Str();
  u.unit = d.I64();
  u.name = d.Str();
  u.bytes_in = d.U64();
  u.bytes_out = d.U64();
  const uint32_t nt = d.Count(28);
  for (uint32_t i = 0; i < nt && d.ok(); ++i) {
    JournaledTensor t;
    t.name = d.Str();
    t.file = d.Str();
    t.offset = d.U64();
    t.size = d.U64();
    t.sha256 = d.Str();
    u.tensors.push_back(std::move(t));
  }
  const uint32_t nm = d.Count(75);
  for (uint32_t i = 0; i < nm && d.ok(); ++i) {
    ModuleResult m;
    m.module = d.Str();
    m.group = d.Str();
    m.rows = d.I64();
    m.cols = d.I64();
    m.global_scale = d.F32();
    const bool has_amax = d.U8() != 0;
    const float amax = d.F32();
    if (has_amax) m.input_amax = amax;
    TensorMetrics& x = m.metrics;
    x.nmse = d.F64();
    x.sqnr_db = d.F64();
    x.max_abs_err = d.F64();
    x.rtn_nmse = d.F64();
    x.nmse_vs_rtn = d.F64();
    const bool has_output = d.U8() != 0;
    const double output = d.F64();
    if (has_output) x.output_nmse = output;
    x.iterations = static_cast<int>(d.I64());
    if (version != kVersionWithoutGptq) x.gptq_dampening = d.F64();
    u.modules.push_back(std::move(m));
  }
  if (version == kVersion) {
    const uint32_t nw = d.Count(4);
    for (uint32_t i = 0; i < nw && d.ok(); ++i) u.warnings.push_back(d.Str());
  }
  if (!d.ok() || !d.done() || u.unit < 0) {
    return absl::DataLossError("journaled unit: malformed record");
  }
  return u;
}

absl::StatusOr<std::string> PlanFingerprint(const formats::CheckpointReader& reader,
                                            const ModelOutputPlan& op) {
  Sha256 h;
  auto add = [&](std::string_view s) {
    h.Update(StrCat(s.size(), ":"));
    h.Update(s);
  };
  add("nvfp4-resume-plan-v1");
  for (size_t i = 0; i < reader.shards().size(); ++i) {
    add(StrCat("input shard ", i));
    for (const formats::TensorInfo& t : reader.shards()[i]->tensors()) {
      std::string shape;
      for (int64_t d : t.shape) shape += StrCat(d, ",");
      add(StrCat(t.name, "|", t.dtype, "|", shape, "|", t.offset, "|", t.size));
    }
  }
  for (size_t f = 0; f < op.shard_files.size(); ++f) {
    std::vector<formats::TensorSpec> specs;
    for (size_t i : op.shard_specs[f]) specs.push_back(op.specs[i]);
    formats::SortForWriting(specs);
    ASSIGN_OR_RETURN(std::string header, formats::BuildSafetensorsHeader(specs, op.shard_metadata));
    add(op.shard_files[f]);
    add(header);
  }
  for (const std::optional<float>& a : op.unit_amax) {
    add(a ? StrCat(std::bit_cast<uint32_t>(*a)) : std::string("-"));
  }
  return h.HexDigest();
}

std::string VerifyJournaledUnit(const JournaledUnit& r, std::vector<std::string> expected,
                                const ShardSubsetWriter& writer, std::vector<uint8_t>& buf,
                                uint64_t* bytes_read) {
  std::vector<std::string> got;
  for (const JournaledTensor& t : r.tensors) got.push_back(t.name);
  std::sort(expected.begin(), expected.end());
  std::sort(got.begin(), got.end());
  if (got != expected) return "the journaled tensors are not the unit's output tensors";
  std::map<std::string, std::unique_ptr<formats::LocalFileSource>> sources;
  for (const JournaledTensor& t : r.tensors) {
    absl::StatusOr<TensorPlacement> p = writer.Locate(t.name);
    if (!p.ok()) return std::string(p.status().message());
    if (p->file != t.file || p->offset != t.offset || p->size != t.size) {
      return StrCat("'", t.name, "' is planned at another place");
    }
    if (!p->reused) return StrCat(p->file, " was not kept from the interrupted run");
    auto& src = sources[p->temp_path];
    if (src == nullptr) {
      absl::StatusOr<std::unique_ptr<formats::LocalFileSource>> s =
          formats::LocalFileSource::Open(p->temp_path);
      if (!s.ok()) return std::string(s.status().message());
      src = std::move(s).value();
    }
    Sha256 h;
    for (uint64_t off = 0; off < t.size;) {
      const uint64_t n = std::min<uint64_t>(buf.size(), t.size - off);
      if (absl::Status s = src->ReadAt(t.offset + off, std::span<uint8_t>(buf.data(), n));
          !s.ok()) {
        return std::string(s.message());
      }
      h.Update(std::span<const uint8_t>(buf.data(), n));
      off += n;
      *bytes_read += n;
    }
    if (h.HexDigest() != t.sha256) return StrCat("the staged bytes of '", t.name, "' differ");
  }
  return "";
}

absl::StatusOr<std::vector<JournaledUnit>> MemoryResumeJournal::Load() {
  absl::MutexLock lock(&mu_);
  std::vector<JournaledUnit> out;
  for (const std::string& r : records_) {
    absl::StatusOr<JournaledUnit> u = DecodeJournaledUnit(r);
    if (!u.ok()) return u.status();
    out.push_back(std::move(u).value());
  }
  return out;
}

absl::Status MemoryResumeJournal::Append(const JournaledUnit& unit) {
  absl::MutexLock lock(&mu_);
  records_.push_back(EncodeJournaledUnit(unit));
  ++appended_;
  return absl::OkStatus();
}

absl::Status MemoryResumeJournal::Reset() {
  absl::MutexLock lock(&mu_);
  records_.clear();
  return absl::OkStatus();
}

int64_t MemoryResumeJournal::appended() const {
  absl::MutexLock lock(&mu_);
  return appended_;
}

}  // namespace nvfp4::pipeline
