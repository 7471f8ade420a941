// Resuming an interrupted QuantizeModel run (nvfp4d's durable jobs).
//
// With QuantizeModelOptions::resume set, QuantizeModel records every finished unit in a
// ResumeJournal: for each of the unit's output tensors the staged safetensors file, the byte range
// [offset, offset + size) in it and the sha256 of those bytes, plus the unit's module results
// (metrics), under a fingerprint of the run's plan (input headers, output headers, input scales).
// The output directory must then keep its staging directory across a crash
// (storage::OutputDirectory::SetResumeKey), so that the partially written files can be reopened.
//
// A later run with the same journal and staging directory keeps each journaled unit whose bytes it
// can verify — same plan, same file and byte range, same sha256 of the staged bytes — and neither
// reads nor quantizes it again; every other unit is redone and overwrites its whole byte range
// (each output file's layout is fixed by its header, planned up front, so nothing else needs
// truncating). Anything in the staging directory other than this plan's safetensors files is
// removed and rewritten. The output is byte-identical to an uninterrupted run.
//
// The pipeline stays storage-agnostic: the journal is an interface (the server appends the records
// to its fsync'd job journal; MemoryResumeJournal serves tests).
#ifndef NVFP4_PIPELINE_RESUME_H_
#define NVFP4_PIPELINE_RESUME_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/sha256.h"
#include "formats/sharded.h"
#include "pipeline/output_files.h"
#include "pipeline/quantize_model.h"

namespace nvfp4::pipeline {

// One output tensor of a finished unit, as written to the staged file.
struct JournaledTensor {
  std::string name;
  std::string file;     // output safetensors file, relative to the staging directory
  uint64_t offset = 0;  // absolute byte offset in the file
  uint64_t size = 0;
  std::string sha256;  // lowercase hex of the `size` bytes at `offset`
};

// One finished unit.
struct JournaledUnit {
  std::string plan;  // fingerprint of the run's plan (records of another plan are discarded)
  int64_t unit = 0;  // index into the plan's units
  std::string name;  // TensorProgress::name
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  std::vector<JournaledTensor> tensors;
  std::vector<ModuleResult> modules;
  std::vector<std::string> warnings;  // what the unit's write reported (copied NaN/Inf values)
};

// A compact, versioned binary encoding of a record (floats and doubles bit-exact, +inf included).
std::string EncodeJournaledUnit(const JournaledUnit& unit);
// DATA_LOSS for malformed bytes.
absl::StatusOr<JournaledUnit> DecodeJournaledUnit(std::string_view bytes);

// Fingerprint of everything that decides a run's output bytes apart from the job's options: the
// input tensors (names, dtypes, shapes, places), the output headers (layout, tensors, files,
// metadata) and the input scales. Journaled units of another fingerprint are not reused.
absl::StatusOr<std::string> PlanFingerprint(const formats::CheckpointReader& reader,
                                            const ModelOutputPlan& plan);

// Checks a journaled unit against the staged files: exactly the output tensors `expected`, each in
// the file and byte range the writer planned, in a partial file kept from the earlier run, with
// the journaled sha256. Returns "" when it holds, else the reason. `buf` is the read buffer (not
// empty); the bytes read are added to *bytes_read.
std::string VerifyJournaledUnit(const JournaledUnit& unit, std::vector<std::string> expected,
                                const ShardSubsetWriter& writer, std::vector<uint8_t>& buf,
                                uint64_t* bytes_read);

// Where a run keeps its finished units. Calls come from the pipeline's threads one at a time.
class ResumeJournal {
 public:
  virtual ~ResumeJournal() = default;
  // Every unit recorded so far by earlier attempts, oldest first.
  virtual absl::StatusOr<std::vector<JournaledUnit>> Load() = 0;
  // Records a finished unit; returns once the record is durable.
  virtual absl::Status Append(const JournaledUnit& unit) = 0;
  // Forgets every recorded unit (the run starts over).
  virtual absl::Status Reset() = 0;
};

// In memory (tests).
class MemoryResumeJournal : public ResumeJournal {
 public:
  absl::StatusOr<std::vector<JournaledUnit>> Load() override;
  absl::Status Append(const JournaledUnit& unit) override;
  absl::Status Reset() override;
  int64_t appended() const;  // Append calls since construction

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> records_ ABSL_GUARDED_BY(mu_);  // encoded, as a real journal holds them
  int64_t appended_ ABSL_GUARDED_BY(mu_) = 0;
};

using ::nvfp4::Sha256;  // base/sha256.h

}  // namespace nvfp4::pipeline

#endif  // NVFP4_PIPELINE_RESUME_H_
