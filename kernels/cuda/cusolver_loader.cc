#include "kernels/cuda/cusolver_loader.h"

#include <dlfcn.h>

namespace nvfp4::cuda {
namespace {

template <typename F>
bool Bind(void* lib, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  return *out != nullptr;
}

const CusolverApi* Load() {
  static CusolverApi api;
  // CUDA 13 still ships libcusolver.so.12 (cuSOLVER's own major version).
  for (const char* name : {"libcusolver.so.12", "libcusolver.so.11", "libcusolver.so"}) {
    void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) continue;
    if (Bind(lib, "cusolverDnCreate", &api.create) &&
        Bind(lib, "cusolverDnDestroy", &api.destroy) &&
        Bind(lib, "cusolverDnSetStream", &api.set_stream) &&
        Bind(lib, "cusolverDnDpotrf_bufferSize", &api.dpotrf_buffer_size) &&
        Bind(lib, "cusolverDnDpotrf", &api.dpotrf) &&
        Bind(lib, "cusolverDnXtrtri_bufferSize", &api.xtrtri_buffer_size) &&
        Bind(lib, "cusolverDnXtrtri", &api.xtrtri)) {
      Bind(lib, "cusolverDnSetDeterministicMode", &api.set_deterministic_mode);
      return &api;
    }
    dlclose(lib);
  }
  return nullptr;
}

}  // namespace

const CusolverApi* LoadCusolver() {
  static const CusolverApi* api = Load();
  return api;
}

}  // namespace nvfp4::cuda
