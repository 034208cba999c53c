// Plain-loop reference convolution (direct, double accumulation). The oracle, not a fast path.
#include "ops/conv2d.h"

#include <cstddef>
#include <vector>

#include "core/error.h"

namespace tb::ref {

void conv2d_forward(const ConvDims& d, const float* x, const float* w, float* y) {
  TB_CHECK(d.layout == Layout::nchw, "the reference ops take NCHW activations only");
  const int64_t oh = d.oh(), ow = d.ow();
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t k = 0; k < d.k; ++k)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          double acc = 0;
          for (int64_t c = 0; c < d.c; ++c)
            for (int64_t r = 0; r < d.r; ++r) {
              const int64_t h = i * d.stride - d.pad + r;
              if (h < 0 || h >= d.h) continue;
              for (int64_t s = 0; s < d.s; ++s) {
                const int64_t ww = j * d.stride - d.pad + s;
                if (ww < 0 || ww >= d.w) continue;
                acc += double(x[((n * d.c + c) * d.h + h) * d.w + ww]) *
                       w[((k * d.c + c) * d.r + r) * d.s + s];
              }
            }
          y[((n * d.k + k) * oh + i) * ow + j] = float(acc);
        }
}

void conv2d_backward_data(const ConvDims& d, const float* dy, const float* w, float* dx) {
  TB_CHECK(d.layout == Layout::nchw, "the reference ops take NCHW activations only");
  const int64_t oh = d.oh(), ow = d.ow();
  std::vector<double> acc(std::size_t(d.n * d.c * d.h * d.w), 0.0);
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t k = 0; k < d.k; ++k)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          const double g = dy[((n * d.k + k) * oh + i) * ow + j];
          for (int64_t c = 0; c < d.c; ++c)
            for (int64_t r = 0; r < d.r; ++r) {
              const int64_t h = i * d.stride - d.pad + r;
              if (h < 0 || h >= d.h) continue;
              for (int64_t s = 0; s < d.s; ++s) {
                const int64_t ww = j * d.stride - d.pad + s;
                if (ww < 0 || ww >= d.w) continue;
                acc[std::size_t(((n * d.c + c) * d.h + h) * d.w + ww)] +=
                    g * w[((k * d.c + c) * d.r + r) * d.s + s];
              }
            }
        }
  for (std::size_t i = 0; i < acc.size(); ++i) dx[i] = float(acc[i]);
}

void conv2d_backward_weights(const ConvDims& d, const float* x, const float* dy, float* dw) {
  TB_CHECK(d.layout == Layout::nchw, "the reference ops take NCHW activations only");
  const int64_t oh = d.oh(), ow = d.ow();
  for (int64_t k = 0; k < d.k; ++k)
    for (int64_t c = 0; c < d.c; ++c)
      for (int64_t r = 0; r < d.r; ++r)
        for (int64_t s = 0; s < d.s; ++s) {
          double acc = 0;
          for (int64_t n = 0; n < d.n; ++n)
            for (int64_t i = 0; i < oh; ++i) {
              const int64_t h = i * d.stride - d.pad + r;
              if (h < 0 || h >= d.h) continue;
              for (int64_t j = 0; j < ow; ++j) {
                const int64_t ww = j * d.stride - d.pad + s;
                if (ww < 0 || ww >= d.w) continue;
                acc += double(dy[((n * d.k + k) * oh + i) * ow + j]) *
                       x[((n * d.c + c) * d.h + h) * d.w + ww];
              }
            }
          dw[((k * d.c + c) * d.r + r) * d.s + s] = float(acc);
        }
}

}  // namespace tb::ref
