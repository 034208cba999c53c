// The reference backend with every convolution and dense product fed bf16-rounded copies of its
// operands (x, W, dy; never a bias or a bias gradient's dy): the arithmetic --precision bf16
// promises, in plain loops. A bf16 backend must match it to fp32 accumulation-order error, where
// against plain fp32 it sits ~2e-3 away.
#pragma once
#include <memory>
#include <vector>

#include "backends/backend.h"
#include "core/dtype.h"

namespace tb::testing {

namespace bf16_reference {

inline const Backend& plain() {
  static const auto ref = make_reference_backend({});
  return *ref;
}
inline std::vector<float> rounded(const float* p, int64_t count) {
  std::vector<float> r(p, p + count);
  for (float& v : r) v = bf16_to_f32(f32_to_bf16(v));
  return r;
}
inline void conv_fwd(void* ctx, OpCache& c, const ConvDims& d, const float* x, const float* w,
                     float* y) {
  plain().conv2d_forward(ctx, c, d, rounded(x, d.n * d.c * d.h * d.w).data(),
                         rounded(w, d.k * d.c * d.r * d.s).data(), y);
}
// As conv_fwd, y then rounded to bf16 values: the maps a bf16-map backend stores between a
// convolution and the batch norm after it (Backend::bf16_maps).
inline void conv_fwd_rounded(void* ctx, OpCache& c, const ConvDims& d, const float* x,
                             const float* w, float* y) {
  conv_fwd(ctx, c, d, x, w, y);
  for (int64_t i = 0; i < d.n * d.k * d.oh() * d.ow(); ++i) y[i] = bf16_to_f32(f32_to_bf16(y[i]));
}
inline void conv_bwd_data(void* ctx, OpCache& c, const ConvDims& d, const float* dy, const float* w,
                          float* dx) {
  plain().conv2d_backward_data(ctx, c, d, rounded(dy, d.n * d.k * d.oh() * d.ow()).data(),
                               rounded(w, d.k * d.c * d.r * d.s).data(), dx);
}
inline void conv_bwd_weights(void* ctx, OpCache& c, const ConvDims& d, const float* x,
                             const float* dy, float* dw) {
  plain().conv2d_backward_weights(ctx, c, d, rounded(x, d.n * d.c * d.h * d.w).data(),
                                  rounded(dy, d.n * d.k * d.oh() * d.ow()).data(), dw);
}
inline void dense_fwd(void* ctx, OpCache& c, const DenseDims& d, const float* x, const float* w,
                      const float* b, float* y, bool relu) {
  plain().dense_forward(ctx, c, d, rounded(x, d.n * d.in).data(), rounded(w, d.out * d.in).data(),
                        b, y, relu);
}
inline void dense_bwd(void* ctx, OpCache& c, const DenseDims& d, const float* x, const float* w,
                      const float* dy, float* dx, float* dw, float* db) {
  // The bias gradient sums dy as it is: only the products read rounded operands.
  if (db) plain().dense_backward(ctx, c, d, x, w, dy, nullptr, dw, db);
  plain().dense_backward(ctx, c, d, rounded(x, d.n * d.in).data(), rounded(w, d.out * d.in).data(),
                         rounded(dy, d.n * d.out).data(), dx, dw, nullptr);
}

}  // namespace bf16_reference

// conv_outputs_rounded: every convolution's output rounded to bf16 as well, which is what a
// backend with bf16 maps computes where batch norms alone read each convolution (ResNets).
inline std::unique_ptr<Backend> make_bf16_reference(bool conv_outputs_rounded = false) {
  namespace r = bf16_reference;
  auto b = make_reference_backend({});
  b->name = conv_outputs_rounded ? "reference-bf16-operands-and-maps" : "reference-bf16-operands";
  b->conv2d_forward = conv_outputs_rounded ? r::conv_fwd_rounded : r::conv_fwd;
  b->conv2d_backward_data = r::conv_bwd_data;
  b->conv2d_backward_weights = r::conv_bwd_weights;
  b->dense_forward = r::dense_fwd, b->dense_backward = r::dense_bwd;
  return b;
}

}  // namespace tb::testing
