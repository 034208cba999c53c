// Batch normalisation on the CPU, NCHW, per channel (PyTorch's BatchNorm2d; see ops/batchnorm.h).
// Shapes: x, y, dy, dx [n, c, hw]; gamma, beta and the statistics [c]; m = n * hw per channel.
//   forward (train)  mean, biased var over m; y = (x - mean) * invstd * gamma + beta;
//                    save_mean, save_invstd = 1/sqrt(var + eps) kept for the backward;
//                    running = (1 - momentum) * running + momentum * batch (variance unbiased)
//   forward (eval)   the same with the running statistics
//   backward         dbeta = sum dy, dgamma = sum dy * xhat,
//                    dx = gamma * invstd * (dy - dbeta / m - xhat * dgamma / m)
//
// Each has a variant with the ReLU after it fused (z = max(y, 0) written instead of y; the
// backward masks dz with z > 0 as it reads it), which the executor uses for every BN -> ReLU, and
// the forwards one with a residual add before that ReLU (z = max(y + skip, 0): ResNet's bn3 ->
// add -> relu, whose backward needs nothing new).
//
// OpenMP loops, not oneDNN: for plain NCHW oneDNN 2.6 has only its generic "ncsp_bnorm"
// (its jit kernels want nChw8c or NHWC, i.e. reorders), and it measured 3-5x slower than these
// loops at batch 128, one thread, CPU time: forward 8.9 vs 1.9 ms (c64, 16x16), 7.0 vs 1.7 ms
// (c256, 8x8); forward+backward 16.3 vs 6.0, 19.1 vs 5.6 ms; level on 1x1 maps (3.5 ms both,
// before the small-map path below). oneDNN also returns the variance, not 1/sqrt(var + eps),
// and leaves the running statistics to the caller.
//
// Two loop shapes, both two-pass (mean, then squared deviations: no E[x^2] - mean^2
// cancellation), partial sums in float over short runs added in double:
//   rows    (hw >= 64)  one channel per iteration; its n rows of hw floats are read three times
//                       while they sit in L2; row sums use four independent vector accumulators
//                       (one would wait on the add latency every vector).
//   blocks  (hw < 64)   rows of 1..63 floats are too short to vectorise: a block of channels is
//                       a contiguous run of every sample, accumulated per position over the
//                       batch (vectorised across positions), then folded into channels.
//   nhwc                x [n*hw rows, c] (batchnorm_nhwc.cpp): each thread sums its share
//                       of the rows per channel (vectorised across channels, float over runs of
//                       kRun rows, then double); the threads' partial sums are added in a fixed
//                       order.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu/batchnorm_loops.h"
#include "core/error.h"

namespace tb::cpu {

namespace {

using namespace bn;

// Maps smaller than this take the block path; a block spans at most kBlock positions.
constexpr int64_t kSmallMap = 64, kBlock = 512;

typedef float v8 __attribute__((vector_size(32)));
inline v8 load8(const float* p) {
  v8 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline float hsum(v8 v) {
  float s = 0;
  for (int j = 0; j < 8; ++j) s += v[j];
  return s;
}

// sum(p[i])
inline float row_sum(const float* p, int64_t n) {
  v8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    a0 += load8(p + i), a1 += load8(p + i + 8), a2 += load8(p + i + 16), a3 += load8(p + i + 24);
  for (; i + 8 <= n; i += 8) a0 += load8(p + i);
  float s = hsum((a0 + a1) + (a2 + a3));
  for (; i < n; ++i) s += p[i];
  return s;
}

// sum((p[i] - mean)^2)
inline float row_sq_dev(const float* p, int64_t n, float mean) {
  v8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
  const v8 mv = mean - v8{};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const v8 t0 = load8(p + i) - mv, t1 = load8(p + i + 8) - mv, t2 = load8(p + i + 16) - mv,
             t3 = load8(p + i + 24) - mv;
    a0 += t0 * t0, a1 += t1 * t1, a2 += t2 * t2, a3 += t3 * t3;
  }
  for (; i + 8 <= n; i += 8) {
    const v8 t = load8(p + i) - mv;
    a0 += t * t;
  }
  float s = hsum((a0 + a1) + (a2 + a3));
  for (; i < n; ++i) s += (p[i] - mean) * (p[i] - mean);
  return s;
}

template <bool Relu>
inline v8 grad8(const float* dy, const float* z, int64_t i) {
  if constexpr (Relu) return load8(z + i) > 0.f ? load8(dy + i) : v8{};
  return load8(dy + i);
}

// s1 = sum(g[i]), s2 = sum(g[i] * (x[i] - mean)), g = grad_at<Relu>(dy, z, i)
template <bool Relu>
inline void row_dy_sums(const float* dy, const float* z, const float* x, int64_t n, float mean,
                        float& s1, float& s2) {
  v8 a0 = {}, a1 = {}, b0 = {}, b1 = {};
  const v8 mv = mean - v8{};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const v8 g0 = grad8<Relu>(dy, z, i), g1 = grad8<Relu>(dy, z, i + 8);
    a0 += g0, a1 += g1;
    b0 += g0 * (load8(x + i) - mv), b1 += g1 * (load8(x + i + 8) - mv);
  }
  for (; i + 8 <= n; i += 8) {
    const v8 g = grad8<Relu>(dy, z, i);
    a0 += g, b0 += g * (load8(x + i) - mv);
  }
  s1 = hsum(a0 + a1), s2 = hsum(b0 + b1);
  for (; i < n; ++i) {
    const float g = grad_at<Relu>(dy, z, i);
    s1 += g, s2 += g * (x[i] - mean);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward, training

// skip: the residual added before the ReLU (E == add_relu), laid out as y.
template <Epi E>
void forward_train_rows(const BnDims& d, const BnParams& p, const float* x, const float* skip,
                        const float* gamma, const float* beta, float* y, float* save_mean,
                        float* save_invstd, float* running_mean, float* running_var) {
  const int64_t N = d.n, C = d.c, HW = d.hw;
  const double m = double(N) * HW;
#pragma omp parallel for schedule(static) if (N * C * HW >= kParallelMin)
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0, sq = 0;
    for (int64_t n = 0; n < N; ++n) sum += row_sum(x + (n * C + c) * HW, HW);
    const float mean = float(sum / m);
    for (int64_t n = 0; n < N; ++n) sq += row_sq_dev(x + (n * C + c) * HW, HW, mean);
    const double var = sq / m, invstd = 1.0 / std::sqrt(var + p.eps);
    const float scale = float(invstd * gamma[c]), shift = beta[c];
    for (int64_t n = 0; n < N; ++n) {
      const int64_t at = (n * C + c) * HW;
      const float* in = x + at;
      const float* sk = E == Epi::add_relu ? skip + at : nullptr;
      float* out = y + at;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) out[i] = finish<E>((in[i] - mean) * scale + shift, sk, i);
    }
    save_mean[c] = mean, save_invstd[c] = float(invstd);
    update_running(p, m, sum / m, var, running_mean[c], running_var[c]);
  }
}

template <Epi E>
void forward_train_blocks(const BnDims& d, const BnParams& p, const float* x, const float* skip,
                          const float* gamma, const float* beta, float* y, float* save_mean,
                          float* save_invstd, float* running_mean, float* running_var) {
  const int64_t N = d.n, C = d.c, HW = d.hw, cb = kBlock / HW, blocks = (C + cb - 1) / cb;
  const double m = double(N) * HW;
#pragma omp parallel for schedule(static) if (N * C * HW >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * cb, c1 = std::min(C, c0 + cb), L = (c1 - c0) * HW;
    float acc[kBlock], mean[kBlock], scale[kBlock], shift[kBlock];  // per position
    double mean_d[kBlock];                                          // per channel
    std::fill(acc, acc + L, 0.f);
    for (int64_t n = 0; n < N; ++n) {
      const float* in = x + (n * C + c0) * HW;
#pragma omp simd
      for (int64_t j = 0; j < L; ++j) acc[j] += in[j];
    }
    for (int64_t c = 0; c < c1 - c0; ++c) {
      double s = 0;
      for (int64_t i = 0; i < HW; ++i) s += acc[c * HW + i];
      mean_d[c] = s / m;
      std::fill(mean + c * HW, mean + (c + 1) * HW, float(mean_d[c]));
    }
    std::fill(acc, acc + L, 0.f);
    for (int64_t n = 0; n < N; ++n) {
      const float* in = x + (n * C + c0) * HW;
#pragma omp simd
      for (int64_t j = 0; j < L; ++j) acc[j] += (in[j] - mean[j]) * (in[j] - mean[j]);
    }
    for (int64_t c = 0; c < c1 - c0; ++c) {
      double sq = 0;
      for (int64_t i = 0; i < HW; ++i) sq += acc[c * HW + i];
      const double var = sq / m, invstd = 1.0 / std::sqrt(var + p.eps);
      std::fill(scale + c * HW, scale + (c + 1) * HW, float(invstd * gamma[c0 + c]));
      std::fill(shift + c * HW, shift + (c + 1) * HW, beta[c0 + c]);
      save_mean[c0 + c] = mean[c * HW], save_invstd[c0 + c] = float(invstd);
      update_running(p, m, mean_d[c], var, running_mean[c0 + c], running_var[c0 + c]);
    }
    for (int64_t n = 0; n < N; ++n) {
      const int64_t at = (n * C + c0) * HW;
      const float* in = x + at;
      const float* sk = E == Epi::add_relu ? skip + at : nullptr;
      float* out = y + at;
#pragma omp simd
      for (int64_t j = 0; j < L; ++j)
        out[j] = finish<E>((in[j] - mean[j]) * scale[j] + shift[j], sk, j);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward, evaluation: no reduction. Channel blocks split over threads; within a block the
// per-channel constants are spread per position so that short rows still run as one vector
// loop over the block's run of each sample.

template <Epi E>
void forward_eval_nchw(const BnDims& d, const BnParams& p, const float* x, const float* skip,
                       const float* gamma, const float* beta, const float* running_mean,
                       const float* running_var, float* y) {
  const int64_t N = d.n, C = d.c, HW = d.hw;
  const int64_t cb = std::max<int64_t>(1, kBlock / HW), blocks = (C + cb - 1) / cb;
#pragma omp parallel for schedule(static) if (N * C * HW >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * cb, c1 = std::min(C, c0 + cb);
    auto constants = [&](int64_t c, float& mu, float& sc, float& sh) {
      mu = running_mean[c];
      sc = float(double(gamma[c]) / std::sqrt(double(running_var[c]) + p.eps));
      sh = beta[c];
    };
    if (HW < kSmallMap) {
      const int64_t L = (c1 - c0) * HW;
      float mean[kBlock], scale[kBlock], shift[kBlock];  // per position
      for (int64_t c = c0; c < c1; ++c) {
        float mu, sc, sh;
        constants(c, mu, sc, sh);
        std::fill(mean + (c - c0) * HW, mean + (c - c0 + 1) * HW, mu);
        std::fill(scale + (c - c0) * HW, scale + (c - c0 + 1) * HW, sc);
        std::fill(shift + (c - c0) * HW, shift + (c - c0 + 1) * HW, sh);
      }
      for (int64_t n = 0; n < N; ++n) {
        const int64_t at = (n * C + c0) * HW;
        const float* in = x + at;
        const float* sk = E == Epi::add_relu ? skip + at : nullptr;
        float* out = y + at;
#pragma omp simd
        for (int64_t j = 0; j < L; ++j)
          out[j] = finish<E>((in[j] - mean[j]) * scale[j] + shift[j], sk, j);
      }
    } else {
      for (int64_t c = c0; c < c1; ++c) {
        float mu, sc, sh;
        constants(c, mu, sc, sh);
        for (int64_t n = 0; n < N; ++n) {
          const int64_t at = (n * C + c) * HW;
          const float* in = x + at;
          const float* sk = E == Epi::add_relu ? skip + at : nullptr;
          float* out = y + at;
#pragma omp simd
          for (int64_t i = 0; i < HW; ++i) out[i] = finish<E>((in[i] - mu) * sc + sh, sk, i);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward: dx = k1 * dy + k2 * (x - mean) + k3 per channel, with
//   k1 = gamma * invstd, k2 = -k1 * invstd * dgamma / m, k3 = -k1 * dbeta / m.

template <bool Relu>
void backward_rows(const BnDims& d, const float* x, const float* dy, const float* z,
                   const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
                   float* dgamma, float* dbeta) {
  const int64_t N = d.n, C = d.c, HW = d.hw;
  const double m = double(N) * HW;
#pragma omp parallel for schedule(static) if (N * C * HW >= kParallelMin)
  for (int64_t c = 0; c < C; ++c) {
    const float mean = save_mean[c], invstd = save_invstd[c];
    double sum_dy = 0, sum_dy_xc = 0;  // xc = x - mean
    for (int64_t n = 0; n < N; ++n) {
      float s1, s2;
      const int64_t at = (n * C + c) * HW;
      row_dy_sums<Relu>(dy + at, Relu ? z + at : nullptr, x + at, HW, mean, s1, s2);
      sum_dy += s1, sum_dy_xc += s2;
    }
    const double sum_dy_xhat = sum_dy_xc * invstd, g = double(gamma[c]) * invstd;
    dgamma[c] = float(sum_dy_xhat), dbeta[c] = float(sum_dy);
    const float k1 = float(g), k2 = float(-g * invstd * sum_dy_xhat / m),
                k3 = float(-g * sum_dy / m);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t at = (n * C + c) * HW;
      const float *xr = x + at, *gr = dy + at, *zr = Relu ? z + at : nullptr;
      float* out = dx + at;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i)
        out[i] = k1 * grad_at<Relu>(gr, zr, i) + (k2 * (xr[i] - mean) + k3);
    }
  }
}

template <bool Relu>
void backward_blocks(const BnDims& d, const float* x, const float* dy, const float* z,
                     const float* gamma, const float* save_mean, const float* save_invstd,
                     float* dx, float* dgamma, float* dbeta) {
  const int64_t N = d.n, C = d.c, HW = d.hw, cb = kBlock / HW, blocks = (C + cb - 1) / cb;
  const double m = double(N) * HW;
#pragma omp parallel for schedule(static) if (N * C * HW >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * cb, c1 = std::min(C, c0 + cb), L = (c1 - c0) * HW;
    float a1[kBlock], a2[kBlock], mean[kBlock], k1[kBlock], k2[kBlock], k3[kBlock];
    for (int64_t c = 0; c < c1 - c0; ++c)
      std::fill(mean + c * HW, mean + (c + 1) * HW, save_mean[c0 + c]);
    std::fill(a1, a1 + L, 0.f);
    std::fill(a2, a2 + L, 0.f);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t at = (n * C + c0) * HW;
      const float *xr = x + at, *gr = dy + at, *zr = Relu ? z + at : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < L; ++j) {
        const float g = grad_at<Relu>(gr, zr, j);
        a1[j] += g, a2[j] += g * (xr[j] - mean[j]);
      }
    }
    for (int64_t c = 0; c < c1 - c0; ++c) {
      double sum_dy = 0, sum_dy_xc = 0;
      for (int64_t i = 0; i < HW; ++i) sum_dy += a1[c * HW + i], sum_dy_xc += a2[c * HW + i];
      const double invstd = save_invstd[c0 + c], sum_dy_xhat = sum_dy_xc * invstd,
                   g = double(gamma[c0 + c]) * invstd;
      dgamma[c0 + c] = float(sum_dy_xhat), dbeta[c0 + c] = float(sum_dy);
      std::fill(k1 + c * HW, k1 + (c + 1) * HW, float(g));
      std::fill(k2 + c * HW, k2 + (c + 1) * HW, float(-g * invstd * sum_dy_xhat / m));
      std::fill(k3 + c * HW, k3 + (c + 1) * HW, float(-g * sum_dy / m));
    }
    for (int64_t n = 0; n < N; ++n) {
      const int64_t at = (n * C + c0) * HW;
      const float *xr = x + at, *gr = dy + at, *zr = Relu ? z + at : nullptr;
      float* out = dx + at;
#pragma omp simd
      for (int64_t j = 0; j < L; ++j)
        out[j] = k1[j] * grad_at<Relu>(gr, zr, j) + (k2[j] * (xr[j] - mean[j]) + k3[j]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Table entries

// Each entry picks its loop shape: NHWC, or under NCHW blocks (maps under kSmallMap) or rows.
template <Epi E>
void forward_train_any(void* ctx, const BnDims& d, const BnParams& p, const float* x,
                       const float* skip, const float* gamma, const float* beta, float* y,
                       float* save_mean, float* save_invstd, float* running_mean,
                       float* running_var) {
  TB_CHECK(d.layout == Layout::nhwc || !(d.x_bf16 || d.y_bf16),
           "batch norm: bf16 maps are read and written under NHWC only");
  if (d.layout == Layout::nhwc)
    forward_train_nhwc(E, context(ctx), d, p, x, skip, gamma, beta, y, save_mean, save_invstd,
                       running_mean, running_var);
  else if (d.hw < kSmallMap)
    forward_train_blocks<E>(d, p, x, skip, gamma, beta, y, save_mean, save_invstd, running_mean,
                            running_var);
  else
    forward_train_rows<E>(d, p, x, skip, gamma, beta, y, save_mean, save_invstd, running_mean,
                          running_var);
}

template <Epi E>
void forward_eval_any(void* ctx, const BnDims& d, const BnParams& p, const float* x,
                      const float* skip, const float* gamma, const float* beta,
                      const float* running_mean, const float* running_var, float* y) {
  TB_CHECK(d.layout == Layout::nhwc || !(d.x_bf16 || d.y_bf16),
           "batch norm: bf16 maps are read and written under NHWC only");
  if (d.layout == Layout::nhwc)
    forward_eval_nhwc(E, context(ctx), d, p, x, skip, gamma, beta, running_mean, running_var, y);
  else
    forward_eval_nchw<E>(d, p, x, skip, gamma, beta, running_mean, running_var, y);
}

template <Epi E>
void forward_train(void* ctx, OpCache&, const BnDims& d, const BnParams& p, const float* x,
                   const float* gamma, const float* beta, float* y, float* save_mean,
                   float* save_invstd, float* running_mean, float* running_var) {
  forward_train_any<E>(ctx, d, p, x, nullptr, gamma, beta, y, save_mean, save_invstd, running_mean,
                       running_var);
}

template <Epi E>
void forward_eval(void* ctx, OpCache&, const BnDims& d, const BnParams& p, const float* x,
                  const float* gamma, const float* beta, const float* running_mean,
                  const float* running_var, float* y) {
  forward_eval_any<E>(ctx, d, p, x, nullptr, gamma, beta, running_mean, running_var, y);
}

void forward_add_relu_train(void* ctx, OpCache&, const BnDims& d, const BnParams& p, const float* x,
                            const float* skip, const float* gamma, const float* beta, float* z,
                            float* save_mean, float* save_invstd, float* running_mean,
                            float* running_var) {
  forward_train_any<Epi::add_relu>(ctx, d, p, x, skip, gamma, beta, z, save_mean, save_invstd,
                                   running_mean, running_var);
}

void forward_add_relu_eval(void* ctx, OpCache&, const BnDims& d, const BnParams& p, const float* x,
                           const float* skip, const float* gamma, const float* beta,
                           const float* running_mean, const float* running_var, float* z) {
  forward_eval_any<Epi::add_relu>(ctx, d, p, x, skip, gamma, beta, running_mean, running_var, z);
}

// z, dz: the fused ReLU's output and its gradient (Relu), else unused and dy is BN's own.
template <bool Relu>
void backward_any(void* ctx, const BnDims& d, const float* x, const float* dy, const float* z,
                  const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
                  float* dgamma, float* dbeta) {
  TB_CHECK(d.layout == Layout::nhwc || !(d.dx_bf16 || d.x_bf16 || d.y_bf16),
           "batch norm: bf16 maps and gradients are read and written under NHWC only");
  if (d.layout == Layout::nhwc)
    backward_nhwc(Relu, context(ctx), d, x, dy, z, gamma, save_mean, save_invstd, dx, dgamma,
                  dbeta);
  else if (d.hw < kSmallMap)
    backward_blocks<Relu>(d, x, dy, z, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  else
    backward_rows<Relu>(d, x, dy, z, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

void backward(void* ctx, OpCache&, const BnDims& d, const float* x, const float* dy,
              const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
              float* dgamma, float* dbeta) {
  backward_any<false>(ctx, d, x, dy, nullptr, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

void backward_relu(void* ctx, OpCache&, const BnDims& d, const float* x, const float* z,
                   const float* dz, const float* gamma, const float* save_mean,
                   const float* save_invstd, float* dx, float* dgamma, float* dbeta) {
  backward_any<true>(ctx, d, x, dz, z, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

}  // namespace

void register_batchnorm(Backend& b) {
  b.batchnorm_forward_train = forward_train<Epi::none>;
  b.batchnorm_forward_eval = forward_eval<Epi::none>;
  b.batchnorm_backward = backward;
  b.batchnorm_relu_forward_train = forward_train<Epi::relu>;
  b.batchnorm_relu_forward_eval = forward_eval<Epi::relu>;
  b.batchnorm_relu_backward = backward_relu;
  b.batchnorm_add_relu_forward_train = forward_add_relu_train;
  b.batchnorm_add_relu_forward_eval = forward_add_relu_eval;
}

}  // namespace tb::cpu
