// Dense (fully connected) layer, PyTorch's Linear: y = x W^T + b.
// Shapes: x [n, in], W [out, in], b [out], y [n, out]. Gradients overwrite their outputs.
#pragma once
#include <cstdint>

namespace tb {

struct DenseDims {
  int64_t n = 0, in = 0, out = 0;
  double flops_forward() const { return 2.0 * n * in * out; }
};

namespace ref {
void dense_forward(const DenseDims& d, const float* x, const float* w, const float* b, float* y);
// dx may be null (the first layer needs no input gradient); db may be null (no bias).
void dense_backward(const DenseDims& d, const float* x, const float* w, const float* dy, float* dx,
                    float* dw, float* db);
}  // namespace ref

}  // namespace tb
