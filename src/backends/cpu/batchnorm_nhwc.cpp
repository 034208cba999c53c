// Batch norm's NHWC loops (see batchnorm.cpp for the formulas and the loop shapes): x [m = n*hw
// rows, c], each thread sums its share of the rows per channel (vectorised across channels, float
// over runs of kRun rows, then double), and the threads' partial sums are added in a fixed order.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu/batchnorm_loops.h"

namespace tb::cpu::bn {

namespace {

constexpr int64_t kRun = 64;  // rows summed in float before the sums move to double

// The rows [r0, r1) of m that thread t of `threads` takes.
inline void thread_rows(int64_t m, int t, int threads, int64_t& r0, int64_t& r1) {
  r0 = m * t / threads, r1 = m * (t + 1) / threads;
}

// Buffers of one NHWC call, in the context (grown on first use, so a step allocates nothing):
// per-channel floats, the threads' float accumulators [threads][2][C], and in double the
// threads' partial sums [threads][2][C] then the two totals [2][C].
struct NhwcScratch {
  int threads;
  float *f, *acc;
  double *part, *out1, *out2;
};
NhwcScratch nhwc_scratch(Context& cx, int64_t m, int64_t C, int64_t floats) {
  NhwcScratch s;
  s.threads = m * C >= kParallelMin ? omp_get_max_threads() : 1;
  const size_t per_thread = size_t(2 * C) * size_t(s.threads);
  s.f = cx.scratch(size_t(floats) + per_thread);
  s.acc = s.f + floats;
  if (cx.sums.size() < per_thread + size_t(2 * C)) cx.sums.resize(per_thread + size_t(2 * C));
  s.part = cx.sums.data(), s.out1 = s.part + per_thread, s.out2 = s.out1 + C;
  return s;
}

// Per channel, over all rows: s.out1[c] = sum f1(row, c), s.out2[c] = sum f2(row, c), where
// add(row, a1, a2) adds one row's terms into the float accumulators a1, a2 [c].
template <class AddRow>
void channel_sums(const NhwcScratch& s, int64_t m, int64_t C, AddRow add) {
  std::fill(s.part, s.part + size_t(2 * C) * size_t(s.threads), 0.0);
#pragma omp parallel num_threads(s.threads)
  {
    const int t = omp_get_thread_num();
    int64_t r0, r1;
    thread_rows(m, t, omp_get_num_threads(), r0, r1);
    float* a = s.acc + t * 2 * C;
    double* s1 = s.part + t * 2 * C;
    double* s2 = s1 + C;
    for (int64_t r = r0; r < r1; r += kRun) {
      std::fill(a, a + 2 * C, 0.f);
      for (int64_t row = r; row < std::min(r1, r + kRun); ++row) add(row, a, a + C);
      for (int64_t c = 0; c < C; ++c) s1[c] += a[c], s2[c] += a[C + c];
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    double v1 = 0, v2 = 0;
    for (int t = 0; t < s.threads; ++t)
      v1 += s.part[t * 2 * C + c], v2 += s.part[t * 2 * C + C + c];
    s.out1[c] = v1, s.out2[c] = v2;
  }
}

// Per row and channel: out = finish<E>((x - mean) * scale + shift), the rows over the threads.
template <Epi E>
void normalize_nhwc(int64_t m, int64_t C, const float* x, const float* skip, const float* mean,
                    const float* scale, const float* shift, float* y) {
#pragma omp parallel for schedule(static) if (m * C >= kParallelMin)
  for (int64_t row = 0; row < m; ++row) {
    const float* in = x + row * C;
    const float* sk = E == Epi::add_relu ? skip + row * C : nullptr;
    float* out = y + row * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c)
      out[c] = finish<E>((in[c] - mean[c]) * scale[c] + shift[c], sk, c);
  }
}

template <Epi E>
void forward_train(Context& cx, const BnDims& d, const BnParams& p, const float* x,
                   const float* skip, const float* gamma, const float* beta, float* y,
                   float* save_mean, float* save_invstd, float* running_mean, float* running_var) {
  const int64_t m = d.n * d.hw, C = d.c;
  const NhwcScratch s = nhwc_scratch(cx, m, C, 2 * C);
  float *mean = s.f, *scale = s.f + C;
  // Two passes, as the NCHW paths: the sums, then the squared deviations (a2 unused in both).
  channel_sums(s, m, C, [&](int64_t row, float* a, float*) {
    const float* in = x + row * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) a[c] += in[c];
  });
  for (int64_t c = 0; c < C; ++c) mean[c] = float(s.out1[c] / double(m));
  channel_sums(s, m, C, [&](int64_t row, float* a, float*) {
    const float* in = x + row * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) a[c] += (in[c] - mean[c]) * (in[c] - mean[c]);
  });
  for (int64_t c = 0; c < C; ++c) {
    const double var = s.out1[c] / double(m), invstd = 1.0 / std::sqrt(var + p.eps);
    scale[c] = float(invstd * gamma[c]);
    save_mean[c] = mean[c], save_invstd[c] = float(invstd);
    update_running(p, double(m), double(mean[c]), var, running_mean[c], running_var[c]);
  }
  normalize_nhwc<E>(m, C, x, skip, mean, scale, beta, y);
}

template <Epi E>
void forward_eval(Context& cx, const BnDims& d, const BnParams& p, const float* x,
                  const float* skip, const float* gamma, const float* beta,
                  const float* running_mean, const float* running_var, float* y) {
  const int64_t C = d.c;
  float* scale = cx.scratch(size_t(C));
  for (int64_t c = 0; c < C; ++c)
    scale[c] = float(double(gamma[c]) / std::sqrt(double(running_var[c]) + p.eps));
  normalize_nhwc<E>(d.n * d.hw, C, x, skip, running_mean, scale, beta, y);
}

template <bool Relu>
void backward(Context& cx, const BnDims& d, const float* x, const float* dy, const float* z,
              const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
              float* dgamma, float* dbeta) {
  const int64_t m = d.n * d.hw, C = d.c;
  const NhwcScratch s = nhwc_scratch(cx, m, C, 3 * C);
  channel_sums(s, m, C, [&](int64_t row, float* a1, float* a2) {
    const float *xr = x + row * C, *gr = dy + row * C, *zr = Relu ? z + row * C : nullptr;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float g = grad_at<Relu>(gr, zr, c);
      a1[c] += g, a2[c] += g * (xr[c] - save_mean[c]);
    }
  });
  const double *sum_dy = s.out1, *sum_dy_xc = s.out2;
  float *k1 = s.f, *k2 = s.f + C, *k3 = s.f + 2 * C;
  for (int64_t c = 0; c < C; ++c) {
    const double invstd = save_invstd[c], sum_dy_xhat = sum_dy_xc[c] * invstd,
                 g = double(gamma[c]) * invstd;
    dgamma[c] = float(sum_dy_xhat), dbeta[c] = float(sum_dy[c]);
    k1[c] = float(g), k2[c] = float(-g * invstd * sum_dy_xhat / double(m));
    k3[c] = float(-g * sum_dy[c] / double(m));
  }
  // Under dx_bf16 the values go out as the convolution before would convert them: bf16.
  uint16_t* dx16 = d.dx_bf16 ? reinterpret_cast<uint16_t*>(dx) : nullptr;
#pragma omp parallel for schedule(static) if (m * C >= kParallelMin)
  for (int64_t row = 0; row < m; ++row) {
    const float *xr = x + row * C, *gr = dy + row * C, *zr = Relu ? z + row * C : nullptr;
    if (dx16) {
      uint16_t* out = dx16 + row * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c)
        out[c] = f32_to_bf16(k1[c] * grad_at<Relu>(gr, zr, c) +
                             (k2[c] * (xr[c] - save_mean[c]) + k3[c]));
    } else {
      float* out = dx + row * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c)
        out[c] = k1[c] * grad_at<Relu>(gr, zr, c) + (k2[c] * (xr[c] - save_mean[c]) + k3[c]);
    }
  }
}

}  // namespace

void forward_train_nhwc(Epi e, Context& cx, const BnDims& d, const BnParams& p, const float* x,
                        const float* skip, const float* gamma, const float* beta, float* y,
                        float* save_mean, float* save_invstd, float* running_mean,
                        float* running_var) {
  switch (e) {
    case Epi::none:
      return forward_train<Epi::none>(cx, d, p, x, skip, gamma, beta, y, save_mean, save_invstd,
                                      running_mean, running_var);
    case Epi::relu:
      return forward_train<Epi::relu>(cx, d, p, x, skip, gamma, beta, y, save_mean, save_invstd,
                                      running_mean, running_var);
    case Epi::add_relu:
      return forward_train<Epi::add_relu>(cx, d, p, x, skip, gamma, beta, y, save_mean, save_invstd,
                                          running_mean, running_var);
  }
}

void forward_eval_nhwc(Epi e, Context& cx, const BnDims& d, const BnParams& p, const float* x,
                       const float* skip, const float* gamma, const float* beta,
                       const float* running_mean, const float* running_var, float* y) {
  switch (e) {
    case Epi::none:
      return forward_eval<Epi::none>(cx, d, p, x, skip, gamma, beta, running_mean, running_var, y);
    case Epi::relu:
      return forward_eval<Epi::relu>(cx, d, p, x, skip, gamma, beta, running_mean, running_var, y);
    case Epi::add_relu:
      return forward_eval<Epi::add_relu>(cx, d, p, x, skip, gamma, beta, running_mean, running_var,
                                         y);
  }
}

void backward_nhwc(bool relu, Context& cx, const BnDims& d, const float* x, const float* dy,
                   const float* z, const float* gamma, const float* save_mean,
                   const float* save_invstd, float* dx, float* dgamma, float* dbeta) {
  if (relu)
    return backward<true>(cx, d, x, dy, z, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  backward<false>(cx, d, x, dy, z, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

}  // namespace tb::cpu::bn
