// Status propagation macros (Debian's abseil 20220623 does not ship them).
//
//   RETURN_IF_ERROR(DoThing());
//   ASSIGN_OR_RETURN(auto value, ComputeThing());
#ifndef NVFP4_BASE_STATUS_MACROS_H_
#define NVFP4_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define NVFP4_CONCAT_INNER_(a, b) a##b
#define NVFP4_CONCAT_(a, b) NVFP4_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status nvfp4_status_ = (expr);           \
    if (!nvfp4_status_.ok()) return nvfp4_status_;   \
  } while (0)

#define NVFP4_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  NVFP4_ASSIGN_OR_RETURN_IMPL_(NVFP4_CONCAT_(nvfp4_statusor_, __LINE__), lhs, expr)

#endif  // NVFP4_BASE_STATUS_MACROS_H_
