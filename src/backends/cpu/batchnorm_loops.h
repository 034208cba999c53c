// What batch norm's CPU loops share (batchnorm.cpp: the table entries and the NCHW loops;
// batchnorm_nhwc.cpp: the NHWC loops): the fused epilogues, the fused ReLU's gradient, the
// running-statistics update, and the NHWC entry points.
#pragma once
#include <cstdint>

#include "backends/cpu/cpu_context.h"
#include "ops/batchnorm.h"

namespace tb::cpu::bn {

// Below this many elements one thread is faster than a parallel region.
constexpr int64_t kParallelMin = 1 << 16;

// A map's element as fp32, and an fp32 value stored as the map's element type: float, or bf16
// (uint16_t, rounded to nearest even; BnDims::x_bf16, y_bf16).
inline float ld(const float* p, int64_t i) {
  return p[i];
}
inline float ld(const uint16_t* p, int64_t i) {
  return bf16_to_f32(p[i]);
}
inline void st(float* p, int64_t i, float v) {
  p[i] = v;
}
inline void st(uint16_t* p, int64_t i, float v) {
  p[i] = f32_to_bf16(v);
}

// With Relu (a fused BN+ReLU): BN's output gradient from the ReLU's output z (stored as Z) and
// gradient dz.
template <bool Relu, class Z = float>
inline float grad_at(const float* dy, const Z* z, int64_t i) {
  if constexpr (Relu) return ld(z, i) > 0.f ? dy[i] : 0.f;
  return dy[i];
}
// What a forward writes after normalising: y itself, max(y, 0), or max(y + skip, 0).
enum class Epi { none, relu, add_relu };
template <Epi E>
inline float finish(float v, const float* skip, int64_t i) {
  if constexpr (E == Epi::add_relu) v += skip[i];
  if constexpr (E != Epi::none) v = v > 0.f ? v : 0.f;
  return v;
}

// The running-statistics update (unbiased variance, as PyTorch).
inline void update_running(const BnParams& p, double m, double mean, double var,
                           float& running_mean, float& running_var) {
  const double unbiased = m > 1 ? var * m / (m - 1) : var;
  running_mean = float((1.0 - p.momentum) * running_mean + p.momentum * mean);
  running_var = float((1.0 - p.momentum) * running_var + p.momentum * unbiased);
}

// NHWC: x [m = n*hw, c] (batchnorm_nhwc.cpp). skip: the residual (Epi::add_relu), z: the fused
// ReLU's output (relu), else null.
void forward_train_nhwc(Epi e, Context& cx, const BnDims& d, const BnParams& p, const float* x,
                        const float* skip, const float* gamma, const float* beta, float* y,
                        float* save_mean, float* save_invstd, float* running_mean,
                        float* running_var);
void forward_eval_nhwc(Epi e, Context& cx, const BnDims& d, const BnParams& p, const float* x,
                       const float* skip, const float* gamma, const float* beta,
                       const float* running_mean, const float* running_var, float* y);
void backward_nhwc(bool relu, Context& cx, const BnDims& d, const float* x, const float* dy,
                   const float* z, const float* gamma, const float* save_mean,
                   const float* save_invstd, float* dx, float* dgamma, float* dbeta);

}  // namespace tb::cpu::bn
