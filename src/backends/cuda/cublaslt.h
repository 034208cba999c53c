// cuBLASLt, loaded with dlopen the first time the CUDA backend needs it instead of linked: the
// library sets itself up when it loads (about 200 MB of memory and 0.4 s of CPU on every start),
// which every CPU run, `--help` and test process would otherwise pay. The backend calls the
// library through this table, whose entries have the headers' own types.
#pragma once
#include <cublasLt.h>

#include <cstdint>

namespace tb::cuda {

struct CublasLt {
  decltype(&cublasLtCreate) Create;
  decltype(&cublasLtDestroy) Destroy;
  decltype(&cublasLtGetVersion) GetVersion;
  decltype(&cublasLtGetStatusString) GetStatusString;
  decltype(&cublasLtGetStatusName) GetStatusName;
  decltype(&cublasLtMatmul) Matmul;
  decltype(&cublasLtMatmulDescCreate) MatmulDescCreate;
  decltype(&cublasLtMatmulDescDestroy) MatmulDescDestroy;
  decltype(&cublasLtMatmulDescSetAttribute) MatmulDescSetAttribute;
  decltype(&cublasLtMatrixLayoutCreate) MatrixLayoutCreate;
  decltype(&cublasLtMatrixLayoutDestroy) MatrixLayoutDestroy;
  decltype(&cublasLtMatmulPreferenceCreate) MatmulPreferenceCreate;
  decltype(&cublasLtMatmulPreferenceDestroy) MatmulPreferenceDestroy;
  decltype(&cublasLtMatmulPreferenceSetAttribute) MatmulPreferenceSetAttribute;
  decltype(&cublasLtMatmulAlgoGetHeuristic) MatmulAlgoGetHeuristic;
};

// The library's functions: loaded on the first call (by soname where the loader finds it, else
// where the build found it) and the same table after. Throws Error saying which library or
// function is missing where it does not load (and tries again on the next call).
const CublasLt& cublaslt();

// cublasLtGetVersion() of the library cublaslt() loads (e.g. 130000); 0 where it does not load.
int64_t cublaslt_version();

}  // namespace tb::cuda
