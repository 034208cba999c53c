// Device code that more than one kernel file runs, so each computes it operation for operation
// alike: Adam's per-element update (optimizer.cu, mlp_step.cu) and gather_batch's per-pixel
// arithmetic (elementwise.cu, mlp_step.cu). Included by .cu files only.
#pragma once
#include <cstdint>

#include "ops/batch.h"

namespace tb::cuda {

// gather_batch's pixel: the uint8 value scaled (padding is 0 before normalising), then
// normalised per channel; rounded as written (no FMA contraction), so the device cuts the batch
// the reference cuts.
__device__ __forceinline__ float scaled_pixel(const BatchSpec& s, uint8_t v) {
  return __fmul_rn(float(v), s.scale);
}
__device__ __forceinline__ float normalised_pixel(const BatchSpec& s, float scaled, int c) {
  return __fmul_rn(__fsub_rn(scaled, s.mean[c]), s.inv_std[c]);
}

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

// hp with this step's bias corrections (t = the cursor's updates + 1), computed once per block by
// thread 0 (two double pow calls, not two per parameter). Every thread of the block calls it.
__device__ __forceinline__ AdamK block_adam(const AdamK& hp, const StepCursor* at) {
  __shared__ AdamK k;
  if (threadIdx.x == 0) {
    k = hp;
    k.correct_for(at->updates + 1);
  }
  __syncthreads();
  return k;
}

}  // namespace tb::cuda
