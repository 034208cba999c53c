// Max pooling (k x k, stride, padding; padded cells never win) and global average pooling.
// Max-pool keeps the flat input index of each output's winner for the backward.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace tb {

struct PoolDims {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t kernel = 3, stride = 2, pad = 1;
  Layout layout = Layout::nchw;  // of x, y and their gradients; argmax indexes x as laid out
  int64_t oh() const { return (h + 2 * pad - kernel) / stride + 1; }
  int64_t ow() const { return (w + 2 * pad - kernel) / stride + 1; }
};

namespace ref {
void maxpool_forward(const PoolDims& d, const float* x, float* y, int32_t* argmax);
void maxpool_backward(const PoolDims& d, const float* dy, const int32_t* argmax, float* dx);
// x [n, c, hw] -> y [n, c]
void global_avgpool_forward(int64_t n, int64_t c, int64_t hw, const float* x, float* y);
void global_avgpool_backward(int64_t n, int64_t c, int64_t hw, const float* dy, float* dx);
}  // namespace ref

}  // namespace tb
