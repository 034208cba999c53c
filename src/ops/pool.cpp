// Plain-loop reference pooling.
#include "ops/pool.h"

#include <limits>

#include "core/error.h"

namespace tb::ref {

void maxpool_forward(const PoolDims& d, const float* x, float* y, int32_t* argmax) {
  TB_CHECK(d.layout == Layout::nchw, "the reference ops take NCHW activations only");
  const int64_t oh = d.oh(), ow = d.ow();
  for (int64_t nc = 0; nc < d.n * d.c; ++nc)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) {
        float best = -std::numeric_limits<float>::infinity();
        int64_t best_at = -1;
        for (int64_t r = 0; r < d.kernel; ++r) {
          const int64_t h = i * d.stride - d.pad + r;
          if (h < 0 || h >= d.h) continue;
          for (int64_t s = 0; s < d.kernel; ++s) {
            const int64_t w = j * d.stride - d.pad + s;
            if (w < 0 || w >= d.w) continue;
            const int64_t at = (nc * d.h + h) * d.w + w;
            if (best_at < 0 || x[at] > best) best = x[at], best_at = at;
          }
        }
        y[(nc * oh + i) * ow + j] = best;
        argmax[(nc * oh + i) * ow + j] = int32_t(best_at);
      }
}

void maxpool_backward(const PoolDims& d, const float* dy, const int32_t* argmax, float* dx) {
  TB_CHECK(d.layout == Layout::nchw, "the reference ops take NCHW activations only");
  const int64_t in = d.n * d.c * d.h * d.w, out = d.n * d.c * d.oh() * d.ow();
  for (int64_t i = 0; i < in; ++i) dx[i] = 0.f;
  for (int64_t o = 0; o < out; ++o) dx[argmax[o]] += dy[o];
}

void global_avgpool_forward(int64_t n, int64_t c, int64_t hw, const float* x, float* y) {
  for (int64_t i = 0; i < n * c; ++i) {
    double acc = 0;
    for (int64_t j = 0; j < hw; ++j) acc += x[i * hw + j];
    y[i] = float(acc / hw);
  }
}

void global_avgpool_backward(int64_t n, int64_t c, int64_t hw, const float* dy, float* dx) {
  for (int64_t i = 0; i < n * c; ++i)
    for (int64_t j = 0; j < hw; ++j) dx[i * hw + j] = dy[i] / float(hw);
}

}  // namespace tb::ref
