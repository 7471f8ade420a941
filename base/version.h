// This project's version: the one of CMakeLists.txt's project() (the configure step fails when
// they differ), shown by `nvfp4d --version` and recorded as the producer of the checkpoints it
// writes (pipeline/layouts.h).
#ifndef NVFP4_BASE_VERSION_H_
#define NVFP4_BASE_VERSION_H_

namespace nvfp4 {

inline constexpr char kVersion[] = "0.1.0";

}  // namespace nvfp4

#endif  // NVFP4_BASE_VERSION_H_
