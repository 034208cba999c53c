// Device code that more than one kernel file runs, so each computes it operation for operation
// alike: Adam's per-element update (optimizer.cu, mlp_step.cu), gather_batch's per-pixel
// arithmetic and softmax cross-entropy's row (elementwise.cu, mlp_step.cu). Included by .cu files
// only.
#pragma once
#include <cstdint>

#include "ops/batch.h"

namespace tb::cuda {

// v[c] for c in [0, 4), without indexing the array at run time (which would copy a kernel's
// by-value BatchSpec to local memory).
__device__ __forceinline__ float channel_value(const float (&v)[4], int c) {
  return c == 0 ? v[0] : c == 1 ? v[1] : c == 2 ? v[2] : v[3];
}

// gather_batch's pixel: the uint8 value scaled (padding is 0 before normalising), then
// normalised per channel; rounded as written (no FMA contraction), so the device cuts the batch
// the reference cuts.
__device__ __forceinline__ float scaled_pixel(const BatchSpec& s, uint8_t v) {
  return __fmul_rn(float(v), s.scale);
}
__device__ __forceinline__ float normalised_pixel(const BatchSpec& s, float scaled, int c) {
  return __fmul_rn(__fsub_rn(scaled, channel_value(s.mean, c)), channel_value(s.inv_std, c));
}

// One row of softmax cross-entropy, by a whole warp (lanes along the k classes): the loss
// (log-sum-exp minus the label's logit; NaN for a label outside [0, k)), whether the argmax is the
// label (first index wins among equal maxima, as the reference's strict >), and where dz is set,
// dz = (softmax - onehot(label)) * scale. Every lane returns the row's values.
struct CeRow {
  float loss;
  bool right;
};
__device__ __forceinline__ CeRow warp_softmax_ce_row(const float* z, int64_t k, int32_t label,
                                                     float scale, float* dz) {
  const int lane = threadIdx.x & 31;
  float best = 0.f;
  int64_t best_i = -1;
  for (int64_t c = lane; c < k; c += 32) {
    const float v = z[c];
    if (best_i < 0 || v > best) best = v, best_i = c;
  }
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, off);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, best_i, off);
    if (oi >= 0 && (best_i < 0 || ov > best || (ov == best && oi < best_i))) best = ov, best_i = oi;
  }
  const float zmax = best;
  float sum = 0.f;
  for (int64_t c = lane; c < k; c += 32) sum += expf(z[c] - zmax);
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float log_sum = logf(sum) + zmax;
  const bool valid = label >= 0 && label < k;
  if (dz)
    for (int64_t c = lane; c < k; c += 32)
      dz[c] = (expf(z[c] - log_sum) - (c == label ? 1.f : 0.f)) * scale;
  return {valid ? log_sum - z[label] : __int_as_float(0x7fc00000), valid && best_i == label};
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
