// ReLU over a flat array. The backward reads the forward's output (y > 0 <=> x > 0), so the
// input need not be kept.
#pragma once
#include <cstdint>

namespace tb::ref {
void relu_forward(int64_t count, const float* x, float* y);
void relu_backward(int64_t count, const float* y, const float* dy, float* dx);
}  // namespace tb::ref
