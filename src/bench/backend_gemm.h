// The measured matrix-product peak of any backend, through its own dense_forward entry (cuBLASLt
// on a GPU, in the precision the backend was made with): the ceiling a run's MFU is held
// against, next to the datasheet figure.
#pragma once
#include "backends/backend.h"
#include "bench/peaks.h"

namespace tb {
// Times y = x W^T with n x n x n, after a warm-up, best of the runs that fit in seconds_budget.
GemmMeasurement measure_backend_gemm(Backend& be, int64_t n, double seconds_budget);
}  // namespace tb
