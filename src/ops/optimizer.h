// Optimizers over one flat parameter array: every parameter of a model lives in one buffer, so
// one update covers them all (one loop on the CPU, one launch on a GPU).
#pragma once
#include <cstdint>

namespace tb {

struct AdamParams {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-7f, weight_decay = 0.f;
};

// SGD with momentum as PyTorch: buf = momentum * buf + g (+ wd * p folded into g);
// p -= lr * (nesterov ? g + momentum * buf : buf).
struct SgdParams {
  float lr = 0.1f, momentum = 0.9f, weight_decay = 0.f;
  bool nesterov = false;
};

namespace ref {
// step counts from 1. Bias correction as Keras/PyTorch: m_hat = m / (1 - b1^t),
// v_hat = v / (1 - b2^t), p -= lr * m_hat / (sqrt(v_hat) + eps). weight_decay is L2 (added to g).
void adam_update(int64_t count, float* p, const float* g, float* m, float* v, const AdamParams& hp,
                 int64_t step);
void sgd_update(int64_t count, float* p, const float* g, float* momentum_buf, const SgdParams& hp);
}  // namespace ref

}  // namespace tb
