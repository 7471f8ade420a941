#include "kernels/cuda/cublas_loader.h"

#include <dlfcn.h>

namespace nvfp4::cuda {
namespace {

template <typename F>
bool Bind(void* lib, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  return *out != nullptr;
}

const CublasApi* Load() {
  static CublasApi api;
  for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
    void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) continue;
    if (Bind(lib, "cublasCreate_v2", &api.create) && Bind(lib, "cublasDestroy_v2", &api.destroy) &&
        Bind(lib, "cublasSetStream_v2", &api.set_stream) &&
        Bind(lib, "cublasSetMathMode", &api.set_math_mode) &&
        Bind(lib, "cublasSgemm_v2", &api.sgemm)) {
      return &api;
    }
    dlclose(lib);
  }
  return nullptr;
}

}  // namespace

const CublasApi* LoadCublas() {
  static const CublasApi* api = Load();
  return api;
}

}  // namespace nvfp4::cuda
