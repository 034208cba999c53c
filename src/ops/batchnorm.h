// Batch normalisation over NCHW, per channel, PyTorch's BatchNorm2d.
// Training: batch mean and biased variance normalise; running stats update with
//   running = (1 - momentum) * running + momentum * batch, the variance unbiased (n*hw/(n*hw-1)).
// save_mean / save_invstd (c each) keep what the backward needs.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace tb {

struct BnDims {
  int64_t n = 0, c = 0, hw = 0;
  Layout layout = Layout::nchw;  // nchw: x [n, c, hw]; nhwc: x [n, hw, c]
  // The backward writes dx as bf16 values (uint16, rounded to nearest even), for the one
  // convolution that reads it (ConvDims::dy_bf16; only where Backend::bf16_conv_grads).
  bool dx_bf16 = false;
  // x holds bf16 values (the convolution before wrote them: ConvDims::y_bf16); the forward writes
  // y (with a fused ReLU: its output, which the backward reads) as bf16 for the convolutions that
  // read it (ConvDims::x_bf16). Statistics and sums stay fp32; only where Backend::bf16_maps.
  bool x_bf16 = false, y_bf16 = false;
};
struct BnParams {
  float eps = 1e-5f, momentum = 0.1f;
};

namespace ref {
void batchnorm_forward_train(const BnDims& d, const BnParams& p, const float* x, const float* gamma,
                             const float* beta, float* y, float* save_mean, float* save_invstd,
                             float* running_mean, float* running_var);
void batchnorm_forward_eval(const BnDims& d, const BnParams& p, const float* x, const float* gamma,
                            const float* beta, const float* running_mean, const float* running_var,
                            float* y);
void batchnorm_backward(const BnDims& d, const float* x, const float* dy, const float* gamma,
                        const float* save_mean, const float* save_invstd, float* dx, float* dgamma,
                        float* dbeta);
}  // namespace ref

}  // namespace tb
