// The checkpoint pipeline behind QuantizeModel (minimal path of issue 5, inside server/ until the
// formats library grows the layout code).
//
// Reads a Hugging Face safetensors checkpoint (single file or sharded with an index) from any
// ObjectStore URI through positioned reads, selects the Linear weights to quantize (2-D `.weight`
// tensors of BF16/F16/F32 with K % 16 == 0, minus the default exclusions: lm_head, embeddings,
// norms, routers/gates, vision towers and projectors, MTP heads, conv1d; plus/minus the request's
// include/exclude regexes), quantizes fused groups (q/k/v, gate/up, expert w1/w3) with one shared
// global scale, and writes the ModelOpt or compressed-tensors layout. Tensors are processed one
// group at a time (memory bounded by the largest group), staged as safetensors shards in a local
// scratch directory, then published to the output URI file by file (atomic per file; the
// index, config.json and hf_quant_config.json are written last). Other files of the input
// (tokenizer, generation config, ...) are copied unchanged.
#ifndef NVFP4_SERVER_MODEL_PIPELINE_H_
#define NVFP4_SERVER_MODEL_PIPELINE_H_

#include <memory>
#include <string>

#include "server/model_job.h"

namespace nvfp4::server {

// `scratch_dir`: local directory for staging output shards (created when missing; empty means
// the system temp directory).
std::unique_ptr<ModelPipeline> MakeCheckpointPipeline(std::string scratch_dir = "");

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_MODEL_PIPELINE_H_
