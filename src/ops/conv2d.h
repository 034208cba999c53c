// 2-D convolution without bias (ResNet's convolutions have none; BN follows).
// Shapes: x [n, c, h, w], W [k, c, r, s], y [n, k, oh, ow]; square stride and padding.
#pragma once
#include <array>
#include <cstdint>

#include "core/dtype.h"

namespace tb {

struct ConvDims {
  int64_t n = 0, c = 0, h = 0, w = 0;  // input
  int64_t k = 0, r = 0, s = 0;         // output channels, kernel height, width
  int64_t stride = 1, pad = 0;
  Layout layout = Layout::nchw;  // of x and y (and dx, dy); W is always [k, c, r, s]
  // dy holds bf16 values (uint16, in dy's layout), as the batch norm after the convolution wrote
  // them (BnDims::dx_bf16; only where Backend::bf16_conv_grads).
  bool dy_bf16 = false;
  // x holds bf16 values (the batch norm and ReLU before wrote them so: BnDims::y_bf16), and the
  // forward writes y as bf16 for the batch norm after it (BnDims::x_bf16); only where
  // Backend::bf16_maps. dx and dW stay fp32.
  bool x_bf16 = false, y_bf16 = false;
  int64_t oh() const { return (h + 2 * pad - r) / stride + 1; }
  int64_t ow() const { return (w + 2 * pad - s) / stride + 1; }
  double macs() const { return double(n) * k * oh() * ow() * c * r * s; }
  double flops_forward() const { return 2.0 * macs(); }
  bool operator==(const ConvDims&) const = default;
};

// A shape, its storage and a direction (0 forward, 1 backward data, 2 backward weights) as one map
// key: the backends choose an algorithm once per key and share it between the nodes of that shape.
inline std::array<int64_t, 11> conv_choice_key(const ConvDims& d, int direction) {
  const int64_t storage =
      int64_t(d.layout) | int64_t(d.x_bf16) << 1 | int64_t(d.y_bf16) << 2 | int64_t(d.dy_bf16) << 3;
  return {d.n, d.c, d.h, d.w, d.k, d.r, d.s, d.stride, d.pad, storage, direction};
}

namespace ref {
void conv2d_forward(const ConvDims& d, const float* x, const float* w, float* y);
void conv2d_backward_data(const ConvDims& d, const float* dy, const float* w, float* dx);
void conv2d_backward_weights(const ConvDims& d, const float* x, const float* dy, float* dw);
}  // namespace ref

}  // namespace tb
