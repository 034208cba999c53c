// 2-D convolution without bias (ResNet's convolutions have none; BN follows).
// Shapes: x [n, c, h, w], W [k, c, r, s], y [n, k, oh, ow]; square stride and padding.
#pragma once
#include <cstdint>

namespace tb {

struct ConvDims {
  int64_t n = 0, c = 0, h = 0, w = 0;  // input
  int64_t k = 0, r = 0, s = 0;         // output channels, kernel height, width
  int64_t stride = 1, pad = 0;
  int64_t oh() const { return (h + 2 * pad - r) / stride + 1; }
  int64_t ow() const { return (w + 2 * pad - s) / stride + 1; }
  double macs() const { return double(n) * k * oh() * ow() * c * r * s; }
  double flops_forward() const { return 2.0 * macs(); }
};

namespace ref {
void conv2d_forward(const ConvDims& d, const float* x, const float* w, float* y);
void conv2d_backward_data(const ConvDims& d, const float* dy, const float* w, float* dx);
void conv2d_backward_weights(const ConvDims& d, const float* x, const float* dy, float* dw);
}  // namespace ref

}  // namespace tb
