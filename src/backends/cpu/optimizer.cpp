// Optimizers on the CPU: one pass over the flat parameter array, vectorised and split over the
// threads; bias corrections computed once per step, not per element.
#include <cmath>

#include "backends/cpu/cpu_context.h"

namespace tb::cpu {

namespace {

void adam_update(void*, int64_t count, float* p, const float* g, float* m, float* v,
                 const AdamParams& hp, int64_t step) {
  const float b1 = hp.beta1, b2 = hp.beta2, wd = hp.weight_decay, eps = hp.eps;
  // p -= lr_t * m / (sqrt(v) / sqrt(bc2) + eps), lr_t = lr / bc1: Keras' and PyTorch's form.
  const float bc1 = 1.f - float(std::pow(double(b1), double(step)));
  const float bc2 = 1.f - float(std::pow(double(b2), double(step)));
  const float step_size = hp.lr / bc1, inv_sqrt_bc2 = 1.f / std::sqrt(bc2);
#pragma omp parallel for simd if (count >= (1 << 18)) schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    const float gi = g[i] + wd * p[i];
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi, v[i] = vi;
    p[i] -= step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}

void sgd_update(void*, int64_t count, float* p, const float* g, float* buf, const SgdParams& hp) {
  const float mu = hp.momentum, wd = hp.weight_decay, lr = hp.lr;
  const bool nesterov = hp.nesterov, use_momentum = mu != 0.f;
#pragma omp parallel for simd if (count >= (1 << 18)) schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    float gi = g[i] + wd * p[i];
    if (use_momentum) {
      buf[i] = mu * buf[i] + gi;
      gi = nesterov ? gi + mu * buf[i] : buf[i];
    }
    p[i] -= lr * gi;
  }
}

}  // namespace

void register_optimizers(Backend& b) {
  b.adam_update = adam_update;
  b.sgd_update = sgd_update;
}

}  // namespace tb::cpu
