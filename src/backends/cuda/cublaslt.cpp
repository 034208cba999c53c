#include "backends/cuda/cublaslt.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <string>

#include "core/error.h"

namespace tb::cuda {

static CublasLt load_cublaslt() {
  const std::string soname = fmt::format("libcublasLt.so.{}", CUBLAS_VER_MAJOR);
  void* lib = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
  std::string tried = soname;
#ifdef TRAINBENCH_CUBLASLT_LIBRARY
  if (!lib) lib = dlopen(TRAINBENCH_CUBLASLT_LIBRARY, RTLD_NOW | RTLD_LOCAL);
  tried += " or " TRAINBENCH_CUBLASLT_LIBRARY;
#endif
  if (!lib)
    fail("cuBLASLt: cannot load {} ({}); put its folder on LD_LIBRARY_PATH", tried, dlerror());
  // Kept loaded for the life of the process: the table's pointers point into it.
  CublasLt api{};
  auto get = [&](auto& entry, const char* name) {
    entry = reinterpret_cast<std::remove_reference_t<decltype(entry)>>(dlsym(lib, name));
    if (!entry)
      fail("cuBLASLt {}: no function {} (a library older than the headers' {}.{}?)", tried, name,
           CUBLAS_VER_MAJOR, CUBLAS_VER_MINOR);
  };
  get(api.Create, "cublasLtCreate");
  get(api.Destroy, "cublasLtDestroy");
  get(api.GetVersion, "cublasLtGetVersion");
  get(api.GetStatusString, "cublasLtGetStatusString");
  get(api.GetStatusName, "cublasLtGetStatusName");
  get(api.Matmul, "cublasLtMatmul");
  get(api.MatmulDescCreate, "cublasLtMatmulDescCreate");
  get(api.MatmulDescDestroy, "cublasLtMatmulDescDestroy");
  get(api.MatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute");
  get(api.MatrixLayoutCreate, "cublasLtMatrixLayoutCreate");
  get(api.MatrixLayoutDestroy, "cublasLtMatrixLayoutDestroy");
  get(api.MatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate");
  get(api.MatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy");
  get(api.MatmulPreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute");
  get(api.MatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic");
  return api;
}

const CublasLt& cublaslt() {
  // Set once, never changed: what the dynamic loader would have bound at start.
  static const CublasLt api = load_cublaslt();
  return api;
}

int64_t cublaslt_version() {
  try {
    return int64_t(cublaslt().GetVersion());
  } catch (const Error&) {
    return 0;
  }
}

}  // namespace tb::cuda
