#include "ops/optimizer.h"

#include <cmath>

namespace tb::ref {

void adam_update(int64_t count, float* p, const float* g, float* m, float* v, const AdamParams& hp,
                 int64_t step) {
  const double bc1 = 1.0 - std::pow(double(hp.beta1), double(step));
  const double bc2 = 1.0 - std::pow(double(hp.beta2), double(step));
  for (int64_t i = 0; i < count; ++i) {
    double gi = double(g[i]) + double(hp.weight_decay) * p[i];
    double mi = hp.beta1 * double(m[i]) + (1.0 - hp.beta1) * gi;
    double vi = hp.beta2 * double(v[i]) + (1.0 - hp.beta2) * gi * gi;
    m[i] = float(mi);
    v[i] = float(vi);
    p[i] = float(p[i] - hp.lr * (mi / bc1) / (std::sqrt(vi / bc2) + hp.eps));
  }
}

void sgd_update(int64_t count, float* p, const float* g, float* buf, const SgdParams& hp) {
  for (int64_t i = 0; i < count; ++i) {
    float gi = g[i] + hp.weight_decay * p[i];
    if (hp.momentum != 0.f) {
      buf[i] = hp.momentum * buf[i] + gi;
      gi = hp.nesterov ? gi + hp.momentum * buf[i] : buf[i];
    }
    p[i] -= hp.lr * gi;
  }
}

}  // namespace tb::ref
