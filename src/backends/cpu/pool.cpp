// Pooling on the CPU: OpenMP loops, one (n, c) plane per iteration.
// Shapes: x [n, c, h, w], y [n, c, oh, ow]; global average: x [n, c, hw] -> y [n, c]
// (NHWC: x [n, h, w, c], y [n, oh, ow, c]; x [n, hw, c]).
//   max-pool forward   y = max over the k x k window (padded cells never win); argmax holds the
//                      FLAT input index of the winner (int32), the first in row-major window
//                      order on ties, exactly as the reference: the trainer keeps it for the
//                      backward and tests compare it element for element.
//   max-pool backward  dx = 0, then dx[argmax[o]] += dy[o]; a plane's winners lie in that plane,
//                      so planes are independent and split over threads without atomics.
//   global average     y = mean over hw; backward dx = dy / hw.
// oneDNN's pooling keeps its own workspace format, not our int32 flat index; the loops are
// memory-bound either way, so they are kept (and match the reference bit for bit).
// Under NHWC the same, one output pixel's c channels at a time (vectorised across channels;
// argmax indexes the NHWC input; the window is scanned in the same order, so ties resolve alike).
#include <algorithm>

#include "backends/cpu/cpu_context.h"

namespace tb::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 16;

// The input rows [h0, h1) and columns [w0, w1) that output (i, j)'s window covers, padding cut off.
struct Window {
  int64_t h0, h1, w0, w1;
};
Window window(const PoolDims& d, int64_t i, int64_t j) {
  const int64_t top = i * d.stride - d.pad, left = j * d.stride - d.pad;
  return {std::max<int64_t>(0, top), std::min<int64_t>(d.h, top + d.kernel),
          std::max<int64_t>(0, left), std::min<int64_t>(d.w, left + d.kernel)};
}

void maxpool_forward_nhwc(const PoolDims& d, const float* x, float* y, int32_t* argmax) {
  const int64_t oh = d.oh(), ow = d.ow(), C = d.c;
#pragma omp parallel for schedule(static) if (d.n * d.c * d.h * d.w >= kParallelMin)
  for (int64_t row = 0; row < d.n * oh * ow; ++row) {
    const int64_t n = row / (oh * ow);
    const auto [h0, h1, w0, w1] = window(d, row / ow % oh, row % ow);
    float* yp = y + row * C;
    int32_t* ap = argmax + row * C;
    const int64_t first = ((n * d.h + h0) * d.w + w0) * C;
    for (int64_t c = 0; c < C; ++c) yp[c] = x[first + c], ap[c] = int32_t(first + c);
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t at = ((n * d.h + h) * d.w + w) * C;
        const float* xp = x + at;
        // Selects, not conditional stores: the compiler leaves those scalar.
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const bool more = xp[c] > yp[c];
          yp[c] = more ? xp[c] : yp[c];
          ap[c] = more ? int32_t(at + c) : ap[c];
        }
      }
  }
}

void maxpool_forward(void*, OpCache&, const PoolDims& d, const float* x, float* y,
                     int32_t* argmax) {
  if (d.layout == Layout::nhwc) return maxpool_forward_nhwc(d, x, y, argmax);
  const int64_t oh = d.oh(), ow = d.ow(), plane = d.h * d.w;
#pragma omp parallel for schedule(static) if (d.n * d.c * plane >= kParallelMin)
  for (int64_t nc = 0; nc < d.n * d.c; ++nc) {
    const float* xp = x + nc * plane;
    float* yp = y + nc * oh * ow;
    int32_t* ap = argmax + nc * oh * ow;
    for (int64_t i = 0; i < oh; ++i) {
      for (int64_t j = 0; j < ow; ++j) {
        const auto [h0, h1, w0, w1] = window(d, i, j);
        int64_t best_at = h0 * d.w + w0;
        float best = xp[best_at];
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w)
            if (xp[h * d.w + w] > best) best = xp[h * d.w + w], best_at = h * d.w + w;
        yp[i * ow + j] = best;
        ap[i * ow + j] = int32_t(nc * plane + best_at);
      }
    }
  }
}

void maxpool_backward(void*, OpCache&, const PoolDims& d, const float* dy, const int32_t* argmax,
                      float* dx) {
  if (d.layout == Layout::nhwc) {
    // An image's winners lie in that image.
    const int64_t out = d.oh() * d.ow() * d.c, image = d.h * d.w * d.c;
#pragma omp parallel for schedule(static) if (d.n * image >= kParallelMin)
    for (int64_t n = 0; n < d.n; ++n) {
      std::fill(dx + n * image, dx + (n + 1) * image, 0.f);
      for (int64_t o = n * out; o < (n + 1) * out; ++o) dx[argmax[o]] += dy[o];
    }
    return;
  }
  const int64_t out = d.oh() * d.ow(), plane = d.h * d.w;
#pragma omp parallel for schedule(static) if (d.n * d.c * plane >= kParallelMin)
  for (int64_t nc = 0; nc < d.n * d.c; ++nc) {
    std::fill(dx + nc * plane, dx + (nc + 1) * plane, 0.f);
    for (int64_t o = nc * out; o < (nc + 1) * out; ++o) dx[argmax[o]] += dy[o];
  }
}

void global_avgpool_forward(void*, int64_t n, int64_t c, int64_t hw, Layout layout, const float* x,
                            float* y) {
  if (hw == 1) {  // ResNet-50 on CIFAR ends on a 1x1 map: the mean of one value is that value
    std::copy(x, x + n * c, y);
    return;
  }
  if (layout == Layout::nhwc) {
#pragma omp parallel for schedule(static) if (n * c * hw >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      float* out = y + i * c;
      std::fill(out, out + c, 0.f);
      for (int64_t j = 0; j < hw; ++j) {
        const float* in = x + (i * hw + j) * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) out[k] += in[k];
      }
      for (int64_t k = 0; k < c; ++k) out[k] = float(double(out[k]) / double(hw));
    }
    return;
  }
#pragma omp parallel for schedule(static) if (n * c * hw >= kParallelMin)
  for (int64_t r = 0; r < n * c; ++r) {
    const float* row = x + r * hw;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < hw; ++j) s += row[j];
    y[r] = float(double(s) / double(hw));
  }
}

void global_avgpool_backward(void*, int64_t n, int64_t c, int64_t hw, Layout layout,
                             const float* dy, float* dx) {
  if (hw == 1) {
    std::copy(dy, dy + n * c, dx);
    return;
  }
  if (layout == Layout::nhwc) {
#pragma omp parallel for schedule(static) if (n * c * hw >= kParallelMin)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < hw; ++j) {
        float* out = dx + (i * hw + j) * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) out[k] = dy[i * c + k] / float(hw);
      }
    return;
  }
#pragma omp parallel for schedule(static) if (n * c * hw >= kParallelMin)
  for (int64_t r = 0; r < n * c; ++r) {
    const float g = dy[r] / float(hw);  // as the reference divides, not 1/hw times
#pragma omp simd
    for (int64_t j = 0; j < hw; ++j) dx[r * hw + j] = g;
  }
}

}  // namespace

void register_pool(Backend& b) {
  b.maxpool_forward = maxpool_forward;
  b.maxpool_backward = maxpool_backward;
  b.global_avgpool_forward = global_avgpool_forward;
  b.global_avgpool_backward = global_avgpool_backward;
}

}  // namespace tb::cpu
