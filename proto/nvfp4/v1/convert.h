// Conversions between the wire types (nvfp4/v1/quantizer.proto) and the numerics types
// (kernels/types.h). Shared by the server and the C++ client so both sides agree on defaults.
#ifndef NVFP4_PROTO_NVFP4_V1_CONVERT_H_
#define NVFP4_PROTO_NVFP4_V1_CONVERT_H_

#include "absl/status/statusor.h"
#include "kernels/types.h"
#include "nvfp4/v1/quantizer.pb.h"

namespace nvfp4::v1 {

// INVALID_ARGUMENT for DTYPE_UNSPECIFIED or an unknown value.
absl::StatusOr<nvfp4::DType> FromProto(DType d);
DType ToProto(nvfp4::DType d);

// Unspecified enum values and zero numbers take the kernels' defaults.
// INVALID_ARGUMENT for unknown enum values or out-of-range numbers.
absl::StatusOr<nvfp4::QuantizeOptions> FromProto(const QuantizeOptions& o);
QuantizeOptions ToProto(const nvfp4::QuantizeOptions& o);

void ToProto(const nvfp4::TensorMetrics& m, TensorMetrics* out);
nvfp4::TensorMetrics FromProto(const TensorMetrics& m);

}  // namespace nvfp4::v1

#endif  // NVFP4_PROTO_NVFP4_V1_CONVERT_H_
