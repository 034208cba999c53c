// Adam's per-element update on the device, shared by the optimizer over the flat parameter array
// (optimizer.cu) and the fused MLP step (mlp_step.cu), so both compute it operation for operation
// alike. Device code: included by .cu files only.
#pragma once
#include <cstdint>

namespace tb::cuda {

struct AdamK {
  float lr, b1, b2, eps, wd, inv_bc1, inv_bc2;
  // This step's bias corrections (step counts from 1), in double as ref::adam_update.
  __device__ __forceinline__ void correct_for(int64_t step) {
    inv_bc1 = float(1.0 / (1.0 - pow(double(b1), double(step))));
    inv_bc2 = float(1.0 / (1.0 - pow(double(b2), double(step))));
  }
  __device__ __forceinline__ void operator()(float& p, float g, float& m, float& v) const {
    const float gi = g + wd * p;
    m = b1 * m + (1.f - b1) * gi;
    v = b2 * v + (1.f - b2) * gi * gi;
    p = p - lr * (m * inv_bc1) / (sqrtf(v * inv_bc2) + eps);
  }
};

}  // namespace tb::cuda
