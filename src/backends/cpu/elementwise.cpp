// Elementwise ops, the loss and batch cutting on the CPU: plain loops the compiler vectorises,
// split over OpenMP threads only when the array is large enough to pay for waking them.
#include <omp.h>

#include <cmath>
#include <vector>

#include "backends/cpu/cpu_context.h"
#include "ops/batch.h"

namespace tb::cpu {

namespace {

// Below this many elements one thread is faster than a parallel region.
constexpr int64_t kParallelMin = 1 << 16;

void relu_forward(void*, int64_t n, const float* x, float* y) {
#pragma omp parallel for simd if (n >= kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.f ? x[i] : 0.f;
}

void relu_backward(void*, int64_t n, const float* y, const float* dy, float* dx) {
#pragma omp parallel for simd if (n >= kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}

void add(void*, int64_t n, const float* a, const float* b, float* y) {
#pragma omp parallel for simd if (n >= kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void softmax_ce(void*, int64_t n, int64_t classes, const float* logits, const int32_t* labels,
                float grad_scale, float* dlogits, float* metrics) {
  double loss_sum = 0, correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* z = logits + i * classes;
    int64_t best = 0;
    float zmax = z[0];
    for (int64_t c = 1; c < classes; ++c)
      if (z[c] > zmax) zmax = z[c], best = c;
    float sum = 0;
    for (int64_t c = 0; c < classes; ++c) sum += std::exp(z[c] - zmax);
    const float log_sum = std::log(sum) + zmax;
    loss_sum += log_sum - z[labels[i]];
    correct += (best == labels[i]);
    if (dlogits) {
      float* g = dlogits + i * classes;
      for (int64_t c = 0; c < classes; ++c) g[c] = std::exp(z[c] - log_sum) * grad_scale;
      g[labels[i]] -= grad_scale;
    }
  }
  metrics[0] += float(loss_sum);
  metrics[1] += float(correct);
}

}  // namespace

void gather_rows(const BatchSpec& s, const uint8_t* images, const uint8_t* labels,
                 const int32_t* indices, int64_t begin, int64_t end, float* x, int32_t* y) {
  const int64_t image = int64_t(s.channels) * s.height * s.width;
  const int64_t plane = int64_t(s.height) * s.width;
  const BatchAt at = batch_at(s);
  indices += at.first;
  // Under NHWC channel c of pixel j goes to j * channels + c.
  const int64_t c_step = s.layout == Layout::nhwc ? 1 : plane,
                j_step = s.layout == Layout::nhwc && s.channels > 1 ? s.channels : 1;
  for (int64_t i = begin; i < end; ++i) {
    const uint8_t* src = images + int64_t(indices[i]) * image;
    float* dst = x + i * image;
    if (y) y[i] = labels[indices[i]];
    for (int c = 0; c < s.channels; ++c) {
      // One multiply-add a pixel: within an ulp or two of the reference's step-by-step
      // (v * scale - mean) * inv_std (CUDA rounds as the reference), not to the bit.
      const float a = s.scale * s.inv_std[c], b = -s.mean[c] * s.inv_std[c];
      const uint8_t* from = src + c * plane;
      float* to = dst + c * c_step;
      if (j_step == 1) {  // NCHW, or one channel: a contiguous run the compiler vectorises
#pragma omp simd
        for (int64_t j = 0; j < plane; ++j) to[j] = from[j] * a + b;
      } else {
        for (int64_t j = 0; j < plane; ++j) to[j * j_step] = from[j] * a + b;
      }
    }
  }
  // The next batch's images sit at random places in a large array: ask for their cache lines
  // now, so the next gather does not wait on memory (at batch 32 it otherwise costs a quarter of
  // the arithmetic of the step). Each caller its share of them.
  const int64_t ahead_begin = s.n + at.lookahead * begin / std::max<int64_t>(s.n, 1);
  const int64_t ahead_end = s.n + at.lookahead * end / std::max<int64_t>(s.n, 1);
  for (int64_t i = ahead_begin; i < ahead_end; ++i) {
    const uint8_t* src = images + int64_t(indices[i]) * image;
    for (int64_t off = 0; off < image; off += 64) __builtin_prefetch(src + off, 0, 1);
  }
}

namespace {

void gather_batch(void*, const BatchSpec& s, const uint8_t* images, const uint8_t* labels,
                  const int32_t* indices, float* x, int32_t* y) {
  const int64_t image = int64_t(s.channels) * s.height * s.width;
  const int64_t plane = int64_t(s.height) * s.width;
  if (s.augment) {
    // Crop and flip are cheap next to a step that needs them (ResNet): the reference loop does,
    // in NCHW; under NHWC into a copy that is then transposed.
    if (s.layout == Layout::nchw) return ref::gather_batch(s, images, labels, indices, x, y);
    static thread_local std::vector<float> nchw;
    nchw.resize(size_t(s.n * image));
    BatchSpec plain = s;
    plain.layout = Layout::nchw;
    ref::gather_batch(plain, images, labels, indices, nchw.data(), y);
    for (int64_t i = 0; i < s.n; ++i)
      for (int c = 0; c < s.channels; ++c)
        for (int64_t j = 0; j < plane; ++j)
          x[(i * plane + j) * s.channels + c] = nchw[size_t((i * s.channels + c) * plane + j)];
    return;
  }
  const int64_t rows = s.n;
  if (rows * image < kParallelMin) return gather_rows(s, images, labels, indices, 0, rows, x, y);
#pragma omp parallel
  {
    const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
    gather_rows(s, images, labels, indices, rows * t / threads, rows * (t + 1) / threads, x, y);
  }
}

}  // namespace

void register_elementwise(Backend& b) {
  b.relu_forward = relu_forward;
  b.relu_backward = relu_backward;
  b.add = add;
  b.softmax_ce = softmax_ce;
  b.gather_batch = gather_batch;
}

}  // namespace tb::cpu
