// Plain-loop reference batch normalisation (PyTorch BatchNorm2d semantics).
#include "ops/batchnorm.h"

#include <cmath>

#include "core/error.h"

namespace tb::ref {

void batchnorm_forward_train(const BnDims& d, const BnParams& p, const float* x, const float* gamma,
                             const float* beta, float* y, float* save_mean, float* save_invstd,
                             float* running_mean, float* running_var) {
  TB_CHECK(d.layout == Layout::nchw, "the reference ops take NCHW activations only");
  const double m = double(d.n) * d.hw;
  for (int64_t c = 0; c < d.c; ++c) {
    double sum = 0, sq = 0;
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) sum += x[(n * d.c + c) * d.hw + i];
    const double mean = sum / m;
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) {
        double t = x[(n * d.c + c) * d.hw + i] - mean;
        sq += t * t;
      }
    const double var = sq / m;  // biased: what normalises
    const double invstd = 1.0 / std::sqrt(var + p.eps);
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) {
        const int64_t at = (n * d.c + c) * d.hw + i;
        y[at] = float((x[at] - mean) * invstd * gamma[c] + beta[c]);
      }
    save_mean[c] = float(mean);
    save_invstd[c] = float(invstd);
    const double unbiased = m > 1 ? sq / (m - 1) : var;
    running_mean[c] = float((1.0 - p.momentum) * running_mean[c] + p.momentum * mean);
    running_var[c] = float((1.0 - p.momentum) * running_var[c] + p.momentum * unbiased);
  }
}

void batchnorm_forward_eval(const BnDims& d, const BnParams& p, const float* x, const float* gamma,
                            const float* beta, const float* running_mean, const float* running_var,
                            float* y) {
  TB_CHECK(d.layout == Layout::nchw, "the reference ops take NCHW activations only");
  for (int64_t c = 0; c < d.c; ++c) {
    const double invstd = 1.0 / std::sqrt(double(running_var[c]) + p.eps);
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) {
        const int64_t at = (n * d.c + c) * d.hw + i;
        y[at] = float((x[at] - running_mean[c]) * invstd * gamma[c] + beta[c]);
      }
  }
}

void batchnorm_backward(const BnDims& d, const float* x, const float* dy, const float* gamma,
                        const float* save_mean, const float* save_invstd, float* dx, float* dgamma,
                        float* dbeta) {
  TB_CHECK(d.layout == Layout::nchw, "the reference ops take NCHW activations only");
  const double m = double(d.n) * d.hw;
  for (int64_t c = 0; c < d.c; ++c) {
    double sum_dy = 0, sum_dy_xhat = 0;
    const double mean = save_mean[c], invstd = save_invstd[c];
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) {
        const int64_t at = (n * d.c + c) * d.hw + i;
        sum_dy += dy[at];
        sum_dy_xhat += dy[at] * (x[at] - mean) * invstd;
      }
    dgamma[c] = float(sum_dy_xhat);
    dbeta[c] = float(sum_dy);
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) {
        const int64_t at = (n * d.c + c) * d.hw + i;
        const double xhat = (x[at] - mean) * invstd;
        dx[at] = float(gamma[c] * invstd * (dy[at] - sum_dy / m - xhat * sum_dy_xhat / m));
      }
  }
}

}  // namespace tb::ref
