// Batch norm's NHWC loops (see batchnorm.cpp for the formulas and the loop shapes): x [m = n*hw
// rows, c], each thread sums its share of the rows per channel (vectorised across channels, float
// over runs of kRun rows, then double), and the threads' partial sums are added in a fixed order.
// A map may be stored in bf16 (BnDims::x_bf16, y_bf16: uint16_t elements); the loops read it
// widened to fp32 and write it rounded to nearest even, so every sum and statistic stays fp32.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backends/cpu/batchnorm_loops.h"

namespace tb::cpu::bn {

namespace {

constexpr int64_t kRun = 64;  // rows summed in float before the sums move to double

// f(x, y) with the maps x and y as their element types: float, or uint16_t where bf16 (y may be
// const: a backward's z).
template <class Y, class F>
void with_maps(bool x_bf16, const float* x, bool y_bf16, Y* y, F f) {
  using Y16 = std::conditional_t<std::is_const_v<Y>, const uint16_t, uint16_t>;
  const auto* x16 = reinterpret_cast<const uint16_t*>(x);
  auto* y16 = reinterpret_cast<Y16*>(y);
  if (x_bf16 && y_bf16) return f(x16, y16);
  if (x_bf16) return f(x16, y);
  if (y_bf16) return f(x, y16);
  f(x, y);
}
// f(std::integral_constant<Epi, e>{}): the epilogue as a template argument.
template <class F>
void with_epi(Epi e, F f) {
  switch (e) {
    case Epi::none:
      return f(std::integral_constant<Epi, Epi::none>{});
    case Epi::relu:
      return f(std::integral_constant<Epi, Epi::relu>{});
    case Epi::add_relu:
      return f(std::integral_constant<Epi, Epi::add_relu>{});
  }
}

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
template <Epi E, class X, class Y>
void normalize_nhwc(int64_t m, int64_t C, const X* x, const float* skip, const float* mean,
                    const float* scale, const float* shift, Y* y) {
#pragma omp parallel for schedule(static) if (m * C >= kParallelMin)
  for (int64_t row = 0; row < m; ++row) {
    const X* in = x + row * C;
    const float* sk = E == Epi::add_relu ? skip + row * C : nullptr;
    Y* out = y + row * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c)
      st(out, c, finish<E>((ld(in, c) - mean[c]) * scale[c] + shift[c], sk, c));
  }
}

template <Epi E, class X, class Y>
void forward_train(Context& cx, const BnDims& d, const BnParams& p, const X* x, const float* skip,
                   const float* gamma, const float* beta, Y* y, float* save_mean,
                   float* save_invstd, float* running_mean, float* running_var) {
  const int64_t m = d.n * d.hw, C = d.c;
  const NhwcScratch s = nhwc_scratch(cx, m, C, 2 * C);
  float *mean = s.f, *scale = s.f + C;
  // Two passes, as the NCHW paths: the sums, then the squared deviations (a2 unused in both).
  channel_sums(s, m, C, [&](int64_t row, float* a, float*) {
    const X* in = x + row * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) a[c] += ld(in, c);
  });
  for (int64_t c = 0; c < C; ++c) mean[c] = float(s.out1[c] / double(m));
  channel_sums(s, m, C, [&](int64_t row, float* a, float*) {
    const X* in = x + row * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) a[c] += (ld(in, c) - mean[c]) * (ld(in, c) - mean[c]);
  });
  for (int64_t c = 0; c < C; ++c) {
    const double var = s.out1[c] / double(m), invstd = 1.0 / std::sqrt(var + p.eps);
    scale[c] = float(invstd * gamma[c]);
    save_mean[c] = mean[c], save_invstd[c] = float(invstd);
    update_running(p, double(m), double(mean[c]), var, running_mean[c], running_var[c]);
  }
  normalize_nhwc<E>(m, C, x, skip, mean, scale, beta, y);
}

template <Epi E, class X, class Y>
void forward_eval(Context& cx, const BnDims& d, const BnParams& p, const X* x, const float* skip,
                  const float* gamma, const float* beta, const float* running_mean,
                  const float* running_var, Y* y) {
  const int64_t C = d.c;
  float* scale = cx.scratch(size_t(C));
  for (int64_t c = 0; c < C; ++c)
    scale[c] = float(double(gamma[c]) / std::sqrt(double(running_var[c]) + p.eps));
  normalize_nhwc<E>(d.n * d.hw, C, x, skip, running_mean, scale, beta, y);
}

template <bool Relu, class X, class Z>
void backward(Context& cx, const BnDims& d, const X* x, const float* dy, const Z* z,
              const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
              float* dgamma, float* dbeta) {
  const int64_t m = d.n * d.hw, C = d.c;
  const NhwcScratch s = nhwc_scratch(cx, m, C, 3 * C);
  channel_sums(s, m, C, [&](int64_t row, float* a1, float* a2) {
    const X* xr = x + row * C;
    const float* gr = dy + row * C;
    const Z* zr = Relu ? z + row * C : nullptr;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float g = grad_at<Relu>(gr, zr, c);
      a1[c] += g, a2[c] += g * (ld(xr, c) - save_mean[c]);
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
  auto write_dx = [&](auto* out) {
#pragma omp parallel for schedule(static) if (m * C >= kParallelMin)
    for (int64_t row = 0; row < m; ++row) {
      const X* xr = x + row * C;
      const float* gr = dy + row * C;
      const Z* zr = Relu ? z + row * C : nullptr;
      auto* o = out + row * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c)
        st(o, c, k1[c] * grad_at<Relu>(gr, zr, c) + (k2[c] * (ld(xr, c) - save_mean[c]) + k3[c]));
    }
  };
  if (d.dx_bf16)
    write_dx(reinterpret_cast<uint16_t*>(dx));
  else
    write_dx(dx);
}

}  // namespace

void forward_train_nhwc(Epi e, Context& cx, const BnDims& d, const BnParams& p, const float* x,
                        const float* skip, const float* gamma, const float* beta, float* y,
                        float* save_mean, float* save_invstd, float* running_mean,
                        float* running_var) {
  with_maps(d.x_bf16, x, d.y_bf16, y, [&](const auto* xs, auto* ys) {
    with_epi(e, [&](auto E) {
      forward_train<E.value>(cx, d, p, xs, skip, gamma, beta, ys, save_mean, save_invstd,
                             running_mean, running_var);
    });
  });
}

void forward_eval_nhwc(Epi e, Context& cx, const BnDims& d, const BnParams& p, const float* x,
                       const float* skip, const float* gamma, const float* beta,
                       const float* running_mean, const float* running_var, float* y) {
  with_maps(d.x_bf16, x, d.y_bf16, y, [&](const auto* xs, auto* ys) {
    with_epi(e, [&](auto E) {
      forward_eval<E.value>(cx, d, p, xs, skip, gamma, beta, running_mean, running_var, ys);
    });
  });
}

// z (the fused ReLU's output) is stored as the forward wrote y: BnDims::y_bf16.
void backward_nhwc(bool relu, Context& cx, const BnDims& d, const float* x, const float* dy,
                   const float* z, const float* gamma, const float* save_mean,
                   const float* save_invstd, float* dx, float* dgamma, float* dbeta) {
  with_maps(d.x_bf16, x, relu && d.y_bf16, z, [&](const auto* xs, const auto* zs) {
    if (relu)
      return backward<true>(cx, d, xs, dy, zs, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
    backward<false>(cx, d, xs, dy, zs, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  });
}

}  // namespace tb::cpu::bn
