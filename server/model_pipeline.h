// The ModelPipeline of nvfp4d: an adapter from a QuantizeModel job to the streaming checkpoint
// pipeline of pipeline/quantize_model.h (the same engine as `nvfp4ctl quantize-model --local`).
//
// Input and output locations go through storage/directory.h: s3:// through the server's
// S3 store, file:// confined to the data roots (every input file checked for `..` and symlink
// escapes; outputs staged in a hidden sibling and renamed into place). Include/exclude patterns
// have the pipeline's semantics (fnmatch globs, or `re:` + a regular expression). Calibration
// statistics (calibration_uri) are read through the same store. Each quantized unit leases a
// device of the DevicePool for the time of its QuantizeGroup call, so a job spreads its tensors
// over free devices and QuantizeTensor calls interleave with it. Progress (tensors, bytes,
// per-tensor metrics, device and seconds) goes to the job's ProgressSink; cancellation is polled
// by every pipeline stage. The job's outputs are listed with size and sha256.
//
// Durable jobs (ModelJobContext::resume set, i.e. nvfp4d with --state_dir): the output's staging
// directory is named by the job id and survives a crash — `.<name>.resume-<job_id>` next to a
// file:// target (same filesystem, so publishing stays one rename), `<work_dir>/<job_id>` for
// s3:// — and QuantizeModel journals every finished unit, so that the run of the restarted server
// resumes after the last one (pipeline/resume.h). (With a scratch_dir, s3:// outputs of durable
// jobs stage in `<scratch_dir>/<job_id>` instead.) An s3:// output keeps only the files being
// written on local disk: each finished file is handed over to the bucket,
// `<output>/.nvfp4-staging-<job_id>/` (storage::OutputDirectory::HandOver), so any replica of a
// fleet resumes the job from those files and its journaled units. The staging is kept when the
// run is interrupted by a shutdown or loses its lease, and removed when the job ends otherwise
// (succeeded, failed or cancelled). Before publishing, the run confirms that this server may
// (ProgressSink::CheckOwnership: in a fleet, that it still holds the job's lease).
#ifndef NVFP4_SERVER_MODEL_PIPELINE_H_
#define NVFP4_SERVER_MODEL_PIPELINE_H_

#include <memory>
#include <string>

#include "formats/sharded.h"
#include "server/model_job.h"

namespace nvfp4::server {

// `scratch_dir`: local directory for staging object-store outputs (empty: the system temp
// directory). `work_dir`: where durable jobs stage object-store outputs when there is no
// `scratch_dir` (e.g. `<state_dir>/work`).
// `max_shard_size`: the largest output safetensors file (QuantizeModelOptions::max_shard_size).
std::unique_ptr<ModelPipeline> MakeCheckpointPipeline(
    std::string scratch_dir = "", std::string work_dir = "",
    uint64_t max_shard_size = formats::kDefaultMaxShardSize);

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_MODEL_PIPELINE_H_
