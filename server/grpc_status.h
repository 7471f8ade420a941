// The one place where absl::Status becomes grpc::Status (the codes share numbering).
#ifndef NVFP4_SERVER_GRPC_STATUS_H_
#define NVFP4_SERVER_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace nvfp4::server {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace nvfp4::server

#endif  // NVFP4_SERVER_GRPC_STATUS_H_
