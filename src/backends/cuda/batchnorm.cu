// Batch normalisation over NCHW on our own kernels, PyTorch BatchNorm2d semantics exactly as
// ref::batchnorm_* (src/ops/batchnorm.cpp):
//   training: batch mean and biased variance normalise; save_mean[c] = mean,
//             save_invstd[c] = 1 / sqrt(var_biased + eps);
//             running = (1 - momentum) * running + momentum * batch, the variance unbiased;
//   eval:     running statistics normalise;
//   backward: consumes save_mean / save_invstd as the forward wrote them.
// The batchnorm_relu_* entries fuse the ReLU that follows: the forwards write z = max(y, 0) and
// the backward takes z and dz, using dz where z > 0 as BN's dy, so the ReLU's own pass is saved.
// The batchnorm_add_relu_* forwards also add a residual before that ReLU: z = max(y + skip, 0).
// One block per channel; the channel's n*hw values are read in two passes (mean, then the
// centred sum of squares, as the reference does, which keeps the variance exact for data with a
// large mean), then once more to write y. ResNet-50 on 32x32 images has at most 32768 values per
// channel at batch 128, which stay in L2 between the passes.
// Where there are fewer channels than SMs and many values per channel (ResNet's 64-channel batch
// norms at 16x16 and 8x8: 64 blocks on an H100's 132 SMs, each over 8k-32k values), each channel
// is cut into slices, one block each: a first kernel reduces every slice (its count, mean and
// centred sum of squares; in the backward its two sums), a second combines a channel's slices
// (Chan et al.'s pairwise formula for the variance, in double) and writes its slice.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "backends/cuda/cuda_context.h"

namespace tb::cuda {
namespace {

constexpr int kThreads = 512;

// Threads for a block that reduces one channel's m values: up to kThreads, fewer where m is
// small (ResNet's 1x1 maps at batch 128 give 128 values: 512 threads would leave 384 idle in
// every pass and every reduction), a multiple of the warp size.
unsigned channel_threads(int64_t m) {
  const int64_t warps = (m + 31) / 32;
  return unsigned(std::min<int64_t>(std::max<int64_t>(warps, 2), kThreads / 32) * 32);
}

// Sum over the block, returned to every thread. `sh` holds 32 floats.
__device__ float block_sum(float v, float* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int warps = int(blockDim.x >> 5);
    float t = lane < warps ? sh[lane] : 0.f;
    for (int off = 16; off > 0; off >>= 1) t += __shfl_xor_sync(0xffffffffu, t, off);
    if (lane == 0) sh[0] = t;
  }
  __syncthreads();
  const float r = sh[0];
  __syncthreads();  // sh may be reused by the next call
  return r;
}

// Element j of channel c (j over n*hw): x[(n*C + c)*hw + i], j = n*hw + i.
__device__ __forceinline__ int64_t at(uint32_t j, uint32_t hw, int64_t c, int64_t C) {
  const uint32_t n = j / hw, i = j - n * hw;
  return (int64_t(n) * C + c) * hw + i;
}

// What a forward writes after normalising: y itself (kPlain), max(y, 0) (kRelu: the executor's
// fused BN+ReLU nodes) or max(y + skip[k], 0) (kAddRelu: ResNet's bn3 -> add -> relu3).
enum Epi : int { kPlain, kRelu, kAddRelu };
template <int E>
__device__ __forceinline__ float finish(float v, const float* skip, int64_t k) {
  if (E == kAddRelu) v += skip[k];
  return E == kPlain ? v : fmaxf(v, 0.f);
}

// ---- one channel's values j in [begin, end) (all n*hw of them, or a slice), by one block ----
struct Range {
  uint32_t begin, end;
};

// The range's mean and centred sum of squares (two passes, as the reference).
struct MeanM2 {
  float mean, m2;
};
__device__ MeanM2 range_mean_m2(const BnDims& d, const float* x, int64_t c, Range r, float* sh) {
  const uint32_t hw = uint32_t(d.hw);
  float s = 0.f;
  for (uint32_t j = r.begin + threadIdx.x; j < r.end; j += blockDim.x) s += x[at(j, hw, c, d.c)];
  const float mean = block_sum(s, sh) / float(r.end - r.begin);
  float q = 0.f;
  for (uint32_t j = r.begin + threadIdx.x; j < r.end; j += blockDim.x) {
    const float t = x[at(j, hw, c, d.c)] - mean;
    q += t * t;
  }
  return {mean, block_sum(q, sh)};
}

// 1/sqrt(var + eps) from the channel's mean and centred sum of squares over its m values; with
// `write`, thread 0 also saves them for the backward and updates the running statistics.
__device__ float channel_statistics(const BnParams& p, int64_t c, uint32_t m, MeanM2 s, bool write,
                                    float* save_mean, float* save_invstd, float* running_mean,
                                    float* running_var) {
  const float var = s.m2 / float(m);
  const float invstd = 1.f / sqrtf(var + p.eps);
  if (write && threadIdx.x == 0) {
    save_mean[c] = s.mean;
    save_invstd[c] = invstd;
    const float unbiased = m > 1 ? s.m2 / float(m - 1) : var;
    running_mean[c] = (1.f - p.momentum) * running_mean[c] + p.momentum * s.mean;
    running_var[c] = (1.f - p.momentum) * running_var[c] + p.momentum * unbiased;
  }
  return invstd;
}

template <int E>
__device__ void range_normalise(const BnDims& d, const float* x, const float* skip, float* y,
                                int64_t c, Range r, float mean, float g, float b) {
  const uint32_t hw = uint32_t(d.hw);
  for (uint32_t j = r.begin + threadIdx.x; j < r.end; j += blockDim.x) {
    const int64_t k = at(j, hw, c, d.c);
    y[k] = finish<E>((x[k] - mean) * g + b, skip, k);
  }
}

// Relu: dy is the gradient of the fused ReLU's output z, and BN's own gradient is dy where
// z > 0, else 0 (z is unused otherwise).
template <bool Relu>
__device__ __forceinline__ float bn_dy(const float* z, const float* dy, int64_t k) {
  return (!Relu || z[k] > 0.f) ? dy[k] : 0.f;
}

// The range's sums of dy and of dy * xhat.
struct GradSums {
  float dy, dyx;
};
template <bool Relu>
__device__ GradSums range_grad_sums(const BnDims& d, const float* x, const float* z,
                                    const float* dy, int64_t c, Range r, float mean, float invstd,
                                    float* sh) {
  const uint32_t hw = uint32_t(d.hw);
  float sdy = 0.f, sdyx = 0.f;
  for (uint32_t j = r.begin + threadIdx.x; j < r.end; j += blockDim.x) {
    const int64_t k = at(j, hw, c, d.c);
    const float g = bn_dy<Relu>(z, dy, k);
    sdy += g;
    sdyx += g * ((x[k] - mean) * invstd);
  }
  const float sum_dy = block_sum(sdy, sh);
  return {sum_dy, block_sum(sdyx, sh)};
}

// dx over the range from the channel's sums over all its m values; with `write`, thread 0 also
// writes dgamma and dbeta.
template <bool Relu>
__device__ void range_dx(const BnDims& d, const float* x, const float* z, const float* dy,
                         const float* gamma, int64_t c, Range r, uint32_t m, float mean,
                         float invstd, GradSums s, bool write, float* dx, float* dgamma,
                         float* dbeta) {
  if (write && threadIdx.x == 0) dgamma[c] = s.dyx, dbeta[c] = s.dy;
  const uint32_t hw = uint32_t(d.hw);
  const float a = gamma[c] * invstd, mean_dy = s.dy / float(m), mean_dyx = s.dyx / float(m);
  for (uint32_t j = r.begin + threadIdx.x; j < r.end; j += blockDim.x) {
    const int64_t k = at(j, hw, c, d.c);
    const float xhat = (x[k] - mean) * invstd;
    dx[k] = a * (bn_dy<Relu>(z, dy, k) - mean_dy - xhat * mean_dyx);
  }
}

// ---- one block per channel ----
template <int E>
__global__ void bn_forward_train_kernel(BnDims d, BnParams p, const float* x, const float* skip,
                                        const float* gamma, const float* beta, float* y,
                                        float* save_mean, float* save_invstd, float* running_mean,
                                        float* running_var) {
  __shared__ float sh[32];
  const int64_t c = blockIdx.x;
  const uint32_t m = uint32_t(d.n * d.hw);
  const Range all{0, m};
  const MeanM2 s = range_mean_m2(d, x, c, all, sh);
  const float invstd =
      channel_statistics(p, c, m, s, true, save_mean, save_invstd, running_mean, running_var);
  range_normalise<E>(d, x, skip, y, c, all, s.mean, gamma[c] * invstd, beta[c]);
}

template <int E>
__global__ void bn_forward_eval_kernel(BnDims d, BnParams p, const float* x, const float* skip,
                                       const float* gamma, const float* beta,
                                       const float* running_mean, const float* running_var,
                                       float* y) {
  const int64_t total = d.n * d.c * d.hw;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t c = (e / d.hw) % d.c;
    const float invstd = 1.f / sqrtf(running_var[c] + p.eps);
    y[e] = finish<E>((x[e] - running_mean[c]) * invstd * gamma[c] + beta[c], skip, e);
  }
}

template <bool Relu>
__global__ void bn_backward_kernel(BnDims d, const float* x, const float* z, const float* dy,
                                   const float* gamma, const float* save_mean,
                                   const float* save_invstd, float* dx, float* dgamma,
                                   float* dbeta) {
  __shared__ float sh[32];
  const int64_t c = blockIdx.x;
  const uint32_t m = uint32_t(d.n * d.hw);
  const Range all{0, m};
  const float mean = save_mean[c], invstd = save_invstd[c];
  const GradSums s = range_grad_sums<Relu>(d, x, z, dy, c, all, mean, invstd, sh);
  range_dx<Relu>(d, x, z, dy, gamma, c, all, m, mean, invstd, s, true, dx, dgamma, dbeta);
}

// ---- channels in slices: block (x = slice, y = channel) ----
struct Slices {
  int64_t count = 1;  // slices per channel, each non-empty
  int64_t len = 0;    // values per slice (the last may have fewer)
};

Slices slices_for(const Context& cx, const BnDims& d) {
  const int64_t m = d.n * d.hw;
  Slices s;
  s.len = m;
  if (!cx.bn_slices || d.c >= cx.sm_count) return s;
  const int64_t fill = (2 * int64_t(cx.sm_count) + d.c - 1) / d.c;  // about 2 blocks an SM
  const int64_t work = m / 2048;                                    // 2048+ values a slice
  const int64_t want = std::min(fill, work);
  if (want < 2) return s;
  s.len = (m + want - 1) / want;
  s.count = (m + s.len - 1) / s.len;
  return s;
}

__device__ __forceinline__ Range slice_range(uint32_t m, uint32_t len) {
  const uint64_t b = uint64_t(blockIdx.x) * len, e = b + len;
  return {uint32_t(b), uint32_t(e < m ? e : m)};
}

// Each slice's partial result in part[(c * slices + slice) * 3 ..]: forward its count, mean and
// centred sum of squares; backward its two gradient sums.
__device__ __forceinline__ float* partial(float* part, int64_t c, uint32_t slice) {
  return part + (c * gridDim.x + slice) * 3;
}

__global__ void bn_slice_stats_kernel(BnDims d, const float* x, uint32_t len, float* part) {
  __shared__ float sh[32];
  const int64_t c = blockIdx.y;
  const Range r = slice_range(uint32_t(d.n * d.hw), len);
  const MeanM2 s = range_mean_m2(d, x, c, r, sh);
  if (threadIdx.x == 0) {
    float* out = partial(part, c, blockIdx.x);
    out[0] = float(r.end - r.begin), out[1] = s.mean, out[2] = s.m2;
  }
}

template <int E>
__global__ void bn_slice_apply_train_kernel(BnDims d, BnParams p, const float* x, const float* skip,
                                            const float* gamma, const float* beta, float* y,
                                            float* save_mean, float* save_invstd,
                                            float* running_mean, float* running_var, uint32_t len,
                                            float* part) {
  __shared__ MeanM2 channel;
  const int64_t c = blockIdx.y;
  const uint32_t m = uint32_t(d.n * d.hw);
  if (threadIdx.x == 0) {
    // Chan et al.'s pairwise combination of the slices' (count, mean, M2), in double.
    double n = 0, mean = 0, m2 = 0;
    for (uint32_t k = 0; k < gridDim.x; ++k) {
      const float* in = partial(part, c, k);
      const double nb = in[0], delta = double(in[1]) - mean, total = n + nb;
      mean += delta * nb / total;
      m2 += double(in[2]) + delta * delta * n * nb / total;
      n = total;
    }
    channel = {float(mean), float(m2)};
  }
  __syncthreads();
  const MeanM2 s = channel;
  const float invstd = channel_statistics(p, c, m, s, blockIdx.x == 0, save_mean, save_invstd,
                                          running_mean, running_var);
  range_normalise<E>(d, x, skip, y, c, slice_range(m, len), s.mean, gamma[c] * invstd, beta[c]);
}

template <bool Relu>
__global__ void bn_slice_grads_kernel(BnDims d, const float* x, const float* z, const float* dy,
                                      const float* save_mean, const float* save_invstd,
                                      uint32_t len, float* part) {
  __shared__ float sh[32];
  const int64_t c = blockIdx.y;
  const Range r = slice_range(uint32_t(d.n * d.hw), len);
  const GradSums s = range_grad_sums<Relu>(d, x, z, dy, c, r, save_mean[c], save_invstd[c], sh);
  if (threadIdx.x == 0) {
    float* out = partial(part, c, blockIdx.x);
    out[0] = s.dy, out[1] = s.dyx;
  }
}

template <bool Relu>
__global__ void bn_slice_apply_backward_kernel(BnDims d, const float* x, const float* z,
                                               const float* dy, const float* gamma,
                                               const float* save_mean, const float* save_invstd,
                                               float* dx, float* dgamma, float* dbeta, uint32_t len,
                                               float* part) {
  __shared__ GradSums channel;
  const int64_t c = blockIdx.y;
  const uint32_t m = uint32_t(d.n * d.hw);
  if (threadIdx.x == 0) {
    GradSums s{0.f, 0.f};
    for (uint32_t k = 0; k < gridDim.x; ++k) {
      const float* in = partial(part, c, k);
      s.dy += in[0], s.dyx += in[1];
    }
    channel = s;
  }
  __syncthreads();
  range_dx<Relu>(d, x, z, dy, gamma, c, slice_range(m, len), m, save_mean[c], save_invstd[c],
                 channel, blockIdx.x == 0, dx, dgamma, dbeta);
}

// The context's buffer for the slices' partial results. It is allocated with the context at its
// bound (slices_for: c < sm_count and count <= ceil(2 sm_count / c), so c * count < 3 sm_count
// slices of 3 floats), never moved, so a recorded graph's pointer into it stays valid.
float* slice_partials(Context& cx, const BnDims& d, const Slices& s, const char* op) {
  if (size_t(d.c * s.count * 3) > bn_partials_for(cx.sm_count))
    fail_msg(op, shape_str(d), "internal: more batch norm slices than their buffer holds");
  return cx.bn_partials;
}

void check_dims(const char* op, const BnDims& d) {
  // 32-bit indices within a channel; the block loops step past the end by up to a block.
  if (d.n * d.hw >= int64_t(1) << 31) fail_msg(op, shape_str(d), "2^31 or more values per channel");
}

const char* forward_op(int e, bool train) {
  if (e == kAddRelu)
    return train ? "batchnorm_add_relu_forward_train" : "batchnorm_add_relu_forward_eval";
  if (e == kRelu) return train ? "batchnorm_relu_forward_train" : "batchnorm_relu_forward_eval";
  return train ? "batchnorm_forward_train" : "batchnorm_forward_eval";
}

template <int E>
void bn_forward_train_launch(Context& cx, const BnDims& d, const BnParams& p, const float* x,
                             const float* skip, const float* gamma, const float* beta, float* y,
                             float* save_mean, float* save_invstd, float* running_mean,
                             float* running_var) {
  const char* op = forward_op(E, true);
  if (d.c <= 0 || d.n * d.hw <= 0) return;
  check_dims(op, d);
  const Slices s = slices_for(cx, d);
  if (s.count > 1) {
    float* part = slice_partials(cx, d, s, op);
    const dim3 grid(unsigned(s.count), unsigned(d.c));
    const unsigned threads = channel_threads(s.len);
    bn_slice_stats_kernel<<<grid, threads, 0, cx.stream>>>(d, x, uint32_t(s.len), part);
    bn_slice_apply_train_kernel<E>
        <<<grid, threads, 0, cx.stream>>>(d, p, x, skip, gamma, beta, y, save_mean, save_invstd,
                                          running_mean, running_var, uint32_t(s.len), part);
  } else {
    bn_forward_train_kernel<E><<<unsigned(d.c), channel_threads(d.n * d.hw), 0, cx.stream>>>(
        d, p, x, skip, gamma, beta, y, save_mean, save_invstd, running_mean, running_var);
  }
  TB_CUDA_LAUNCH_CHECK(op, shape_str(d));
}

template <int E>
void bn_forward_eval_launch(Context& cx, const BnDims& d, const BnParams& p, const float* x,
                            const float* skip, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, float* y) {
  const int64_t total = d.n * d.c * d.hw;
  if (total <= 0) return;
  bn_forward_eval_kernel<E><<<grid_for(cx, total, 256), 256, 0, cx.stream>>>(
      d, p, x, skip, gamma, beta, running_mean, running_var, y);
  TB_CUDA_LAUNCH_CHECK(forward_op(E, false), shape_str(d));
}

template <int E>
void bn_forward_train(void* ctx, OpCache&, const BnDims& d, const BnParams& p, const float* x,
                      const float* gamma, const float* beta, float* y, float* save_mean,
                      float* save_invstd, float* running_mean, float* running_var) {
  bn_forward_train_launch<E>(context(ctx), d, p, x, nullptr, gamma, beta, y, save_mean, save_invstd,
                             running_mean, running_var);
}

template <int E>
void bn_forward_eval(void* ctx, OpCache&, const BnDims& d, const BnParams& p, const float* x,
                     const float* gamma, const float* beta, const float* running_mean,
                     const float* running_var, float* y) {
  bn_forward_eval_launch<E>(context(ctx), d, p, x, nullptr, gamma, beta, running_mean, running_var,
                            y);
}

void bn_add_relu_forward_train(void* ctx, OpCache&, const BnDims& d, const BnParams& p,
                               const float* x, const float* skip, const float* gamma,
                               const float* beta, float* z, float* save_mean, float* save_invstd,
                               float* running_mean, float* running_var) {
  bn_forward_train_launch<kAddRelu>(context(ctx), d, p, x, skip, gamma, beta, z, save_mean,
                                    save_invstd, running_mean, running_var);
}

void bn_add_relu_forward_eval(void* ctx, OpCache&, const BnDims& d, const BnParams& p,
                              const float* x, const float* skip, const float* gamma,
                              const float* beta, const float* running_mean,
                              const float* running_var, float* z) {
  bn_forward_eval_launch<kAddRelu>(context(ctx), d, p, x, skip, gamma, beta, running_mean,
                                   running_var, z);
}

template <bool Relu>
void bn_backward_launch(Context& cx, const char* op, const BnDims& d, const float* x,
                        const float* z, const float* dy, const float* gamma, const float* save_mean,
                        const float* save_invstd, float* dx, float* dgamma, float* dbeta) {
  if (d.c <= 0 || d.n * d.hw <= 0) return;
  check_dims(op, d);
  const Slices s = slices_for(cx, d);
  if (s.count > 1) {
    float* part = slice_partials(cx, d, s, op);
    const dim3 grid(unsigned(s.count), unsigned(d.c));
    const unsigned threads = channel_threads(s.len);
    const uint32_t len = uint32_t(s.len);
    bn_slice_grads_kernel<Relu>
        <<<grid, threads, 0, cx.stream>>>(d, x, z, dy, save_mean, save_invstd, len, part);
    bn_slice_apply_backward_kernel<Relu><<<grid, threads, 0, cx.stream>>>(
        d, x, z, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, len, part);
  } else {
    bn_backward_kernel<Relu><<<unsigned(d.c), channel_threads(d.n * d.hw), 0, cx.stream>>>(
        d, x, z, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  }
  TB_CUDA_LAUNCH_CHECK(op, shape_str(d));
}

void bn_backward(void* ctx, OpCache&, const BnDims& d, const float* x, const float* dy,
                 const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
                 float* dgamma, float* dbeta) {
  bn_backward_launch<false>(context(ctx), "batchnorm_backward", d, x, nullptr, dy, gamma, save_mean,
                            save_invstd, dx, dgamma, dbeta);
}

void bn_relu_backward(void* ctx, OpCache&, const BnDims& d, const float* x, const float* z,
                      const float* dz, const float* gamma, const float* save_mean,
                      const float* save_invstd, float* dx, float* dgamma, float* dbeta) {
  bn_backward_launch<true>(context(ctx), "batchnorm_relu_backward", d, x, z, dz, gamma, save_mean,
                           save_invstd, dx, dgamma, dbeta);
}

}  // namespace

void register_batchnorm(Backend& b) {
  b.batchnorm_forward_train = bn_forward_train<kPlain>;
  b.batchnorm_forward_eval = bn_forward_eval<kPlain>;
  b.batchnorm_backward = bn_backward;
  b.batchnorm_relu_forward_train = bn_forward_train<kRelu>;
  b.batchnorm_relu_forward_eval = bn_forward_eval<kRelu>;
  b.batchnorm_relu_backward = bn_relu_backward;
  b.batchnorm_add_relu_forward_train = bn_add_relu_forward_train;
  b.batchnorm_add_relu_forward_eval = bn_add_relu_forward_eval;
}

}  // namespace tb::cuda
