#include "ops/softmax_ce.h"

#include <cmath>

namespace tb::ref {

void softmax_ce(int64_t n, int64_t classes, const float* logits, const int32_t* labels,
                float grad_scale, float* dlogits, float* metrics) {
  double loss_sum = 0, correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* z = logits + i * classes;
    int64_t best = 0;
    double zmax = z[0];
    for (int64_t c = 1; c < classes; ++c)
      if (z[c] > zmax) zmax = z[c], best = c;
    double sum = 0;
    for (int64_t c = 0; c < classes; ++c) sum += std::exp(double(z[c]) - zmax);
    const double log_sum = std::log(sum) + zmax;
    loss_sum += log_sum - z[labels[i]];
    correct += (best == labels[i]);
    if (dlogits)
      for (int64_t c = 0; c < classes; ++c) {
        double p = std::exp(double(z[c]) - log_sum);
        dlogits[i * classes + c] = float((p - (c == labels[i])) * grad_scale);
      }
  }
  metrics[0] += float(loss_sum);
  metrics[1] += float(correct);
}

}  // namespace tb::ref
