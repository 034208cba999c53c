#include "ops/relu.h"

namespace tb::ref {

void relu_forward(int64_t count, const float* x, float* y) {
  for (int64_t i = 0; i < count; ++i) y[i] = x[i] > 0.f ? x[i] : 0.f;
}

void relu_backward(int64_t count, const float* y, const float* dy, float* dx) {
  for (int64_t i = 0; i < count; ++i) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}

}  // namespace tb::ref
