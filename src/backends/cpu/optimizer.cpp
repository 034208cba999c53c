// Optimizers on the CPU: one pass over the flat parameter array, vectorised and split over the
// threads; bias corrections computed once per step, not per element. Under bf16 each pass also
// writes the new values' bf16 copy into the array's mirror (cpu_context.h), where they already sit
// in registers, instead of every convolution converting its weights at every call.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu/adam.h"
#include "backends/cpu/cpu_context.h"

namespace tb::cpu {

namespace {

// 1 / (sqrt(v) * c + eps) for 8 lanes without vsqrtps/vdivps (each ~10+ cycles a vector on
// current cores, and the update is otherwise a handful of FMAs): reciprocal-sqrt and reciprocal
// estimates, each refined by one Newton step, about 1e-7 relative error. v = 0 gives 1 / eps.
static inline __m256 adam_denominator_inv(__m256 v, __m256 c, __m256 eps) {
  const __m256 half = _mm256_set1_ps(0.5f), three = _mm256_set1_ps(3.f), two = _mm256_set1_ps(2.f);
  __m256 r = _mm256_rsqrt_ps(v);  // inf at v = 0, masked below
  r = _mm256_mul_ps(_mm256_mul_ps(half, r), _mm256_fnmadd_ps(_mm256_mul_ps(v, r), r, three));
  __m256 s = _mm256_mul_ps(v, r);  // sqrt(v)
  s = _mm256_and_ps(s, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ));
  const __m256 d = _mm256_fmadd_ps(s, c, eps);
  __m256 q = _mm256_rcp_ps(d);
  return _mm256_mul_ps(q, _mm256_fnmadd_ps(d, q, two));
}

// Eight floats to bf16 at dst, rounded to nearest even as f32_to_bf16 (NaN kept quiet).
static inline void store_bf16x8(uint16_t* dst, __m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r =
      _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, quiet, nan);
  const __m128i packed =
      _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), packed);
}

}  // namespace

AdamConstants adam_constants(const AdamParams& hp, int64_t step) {
  AdamConstants k;
  k.b1 = hp.beta1, k.b2 = hp.beta2, k.wd = hp.weight_decay, k.eps = hp.eps;
  // p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps): Keras' and PyTorch's form, with the bias
  // corrections computed once per step.
  const float bc1 = 1.f - float(std::pow(double(hp.beta1), double(step)));
  const float bc2 = 1.f - float(std::pow(double(hp.beta2), double(step)));
  k.step_size = hp.lr / bc1, k.inv_sqrt_bc2 = 1.f / std::sqrt(bc2);
  return k;
}

void adam_span(const AdamConstants& k, int64_t begin, int64_t end, float* p, const float* g,
               float* m, float* v, uint16_t* p16) {
  const float b1 = k.b1, b2 = k.b2, wd = k.wd, eps = k.eps;
  const float step_size = k.step_size, inv_sqrt_bc2 = k.inv_sqrt_bc2;
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m256 gi =
        _mm256_fmadd_ps(_mm256_set1_ps(wd), _mm256_loadu_ps(p + i), _mm256_loadu_ps(g + i));
    const __m256 mi = _mm256_fmadd_ps(_mm256_set1_ps(b1), _mm256_loadu_ps(m + i),
                                      _mm256_mul_ps(_mm256_set1_ps(1.f - b1), gi));
    const __m256 vi =
        _mm256_fmadd_ps(_mm256_set1_ps(b2), _mm256_loadu_ps(v + i),
                        _mm256_mul_ps(_mm256_set1_ps(1.f - b2), _mm256_mul_ps(gi, gi)));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    const __m256 inv = adam_denominator_inv(vi, _mm256_set1_ps(inv_sqrt_bc2), _mm256_set1_ps(eps));
    const __m256 upd = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(step_size), mi), inv);
    const __m256 pi = _mm256_sub_ps(_mm256_loadu_ps(p + i), upd);
    _mm256_storeu_ps(p + i, pi);
    if (p16) store_bf16x8(p16 + i, pi);
  }
  for (; i < end; ++i) {
    const float gj = g[i] + wd * p[i];
    m[i] = b1 * m[i] + (1.f - b1) * gj;
    v[i] = b2 * v[i] + (1.f - b2) * gj * gj;
    p[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
    if (p16) p16[i] = f32_to_bf16(p[i]);
  }
}

namespace {

void adam_update(void* ctx, int64_t count, float* p, const float* g, float* m, float* v,
                 const AdamParams& hp, const StepCursor* at) {
  uint16_t* p16 = context(ctx).mirror_of(p, size_t(count));  // nullptr: no mirror to keep
  const AdamConstants k = adam_constants(hp, at->updates + 1);
  // Two threads pay off from about 32k parameters (a parallel region costs a few microseconds).
  // Each thread a contiguous run of whole vectors, as a static schedule over them would give.
#pragma omp parallel if (count >= (1 << 15))
  {
    const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
    const int64_t vectors = (count + 7) / 8;
    const int64_t begin = std::min(count, vectors * t / threads * 8);
    const int64_t end = std::min(count, vectors * (t + 1) / threads * 8);
    adam_span(k, begin, end, p, g, m, v, p16);
  }
}

void sgd_update(void* ctx, int64_t count, float* p, const float* g, float* buf,
                const SgdParams& hp) {
  const float mu = hp.momentum, wd = hp.weight_decay, lr = hp.lr;
  const bool nesterov = hp.nesterov, use_momentum = mu != 0.f;
#pragma omp parallel for simd if (count >= (1 << 18)) schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    float gi = g[i] + wd * p[i];
    if (use_momentum) {
      buf[i] = mu * buf[i] + gi;
      gi = nesterov ? gi + mu * buf[i] : buf[i];
    }
    p[i] -= lr * gi;
  }
  // SGD's pass is memory-bound already; the mirror takes a second one.
  if (uint16_t* p16 = context(ctx).mirror_of(p, size_t(count))) convert_to_bf16(p, p16, count);
}

}  // namespace

void register_optimizers(Backend& b) {
  b.adam_update = adam_update;
  b.sgd_update = sgd_update;
  b.advance_cursor = [](void*, StepCursor* c) { advance(*c); };
}

}  // namespace tb::cpu
