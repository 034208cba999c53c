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

// What a forward writes after normalising: y itself (kPlain), max(y, 0) (kRelu: the Trainer's
// fused BN+ReLU nodes) or max(y + skip[k], 0) (kAddRelu: ResNet's bn3 -> add -> relu3).
enum Epi : int { kPlain, kRelu, kAddRelu };
template <int E>
__device__ __forceinline__ float finish(float v, const float* skip, int64_t k) {
  if (E == kAddRelu) v += skip[k];
  return E == kPlain ? v : fmaxf(v, 0.f);
}

template <int E>
__global__ void bn_forward_train_kernel(BnDims d, BnParams p, const float* x, const float* skip,
                                        const float* gamma, const float* beta, float* y,
                                        float* save_mean, float* save_invstd, float* running_mean,
                                        float* running_var) {
  __shared__ float sh[32];
  const int64_t c = blockIdx.x;
  const uint32_t m = uint32_t(d.n * d.hw), hw = uint32_t(d.hw);
  float s = 0.f;
  for (uint32_t j = threadIdx.x; j < m; j += blockDim.x) s += x[at(j, hw, c, d.c)];
  const float mean = block_sum(s, sh) / float(m);
  float q = 0.f;
  for (uint32_t j = threadIdx.x; j < m; j += blockDim.x) {
    const float t = x[at(j, hw, c, d.c)] - mean;
    q += t * t;
  }
  const float sq = block_sum(q, sh);
  const float var = sq / float(m);
  const float invstd = 1.f / sqrtf(var + p.eps);
  const float g = gamma[c] * invstd, b = beta[c];
  for (uint32_t j = threadIdx.x; j < m; j += blockDim.x) {
    const int64_t k = at(j, hw, c, d.c);
    y[k] = finish<E>((x[k] - mean) * g + b, skip, k);
  }
  if (threadIdx.x == 0) {
    save_mean[c] = mean;
    save_invstd[c] = invstd;
    const float unbiased = m > 1 ? sq / float(m - 1) : var;
    running_mean[c] = (1.f - p.momentum) * running_mean[c] + p.momentum * mean;
    running_var[c] = (1.f - p.momentum) * running_var[c] + p.momentum * unbiased;
  }
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

// Relu: dy is the gradient of the fused ReLU's output z, and BN's own gradient is dy where
// z > 0, else 0 (z is unused otherwise).
template <bool Relu>
__global__ void bn_backward_kernel(BnDims d, const float* x, const float* z, const float* dy,
                                   const float* gamma, const float* save_mean,
                                   const float* save_invstd, float* dx, float* dgamma,
                                   float* dbeta) {
  __shared__ float sh[32];
  const int64_t c = blockIdx.x;
  const uint32_t m = uint32_t(d.n * d.hw), hw = uint32_t(d.hw);
  const float mean = save_mean[c], invstd = save_invstd[c];
  float sdy = 0.f, sdyx = 0.f;
  for (uint32_t j = threadIdx.x; j < m; j += blockDim.x) {
    const int64_t k = at(j, hw, c, d.c);
    const float g = (!Relu || z[k] > 0.f) ? dy[k] : 0.f;
    sdy += g;
    sdyx += g * ((x[k] - mean) * invstd);
  }
  const float sum_dy = block_sum(sdy, sh);
  const float sum_dy_xhat = block_sum(sdyx, sh);
  if (threadIdx.x == 0) {
    dgamma[c] = sum_dy_xhat;
    dbeta[c] = sum_dy;
  }
  const float a = gamma[c] * invstd, mean_dy = sum_dy / float(m), mean_dyx = sum_dy_xhat / float(m);
  for (uint32_t j = threadIdx.x; j < m; j += blockDim.x) {
    const int64_t k = at(j, hw, c, d.c);
    const float xhat = (x[k] - mean) * invstd;
    const float g = (!Relu || z[k] > 0.f) ? dy[k] : 0.f;
    dx[k] = a * (g - mean_dy - xhat * mean_dyx);
  }
}

void check_dims(const char* op, const BnDims& d) {
  if (d.n * d.hw > int64_t(UINT32_MAX))
    fail_msg(op, shape_str(d), "more than 2^32 values per channel");
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
  bn_forward_train_kernel<E><<<unsigned(d.c), channel_threads(d.n * d.hw), 0, cx.stream>>>(
      d, p, x, skip, gamma, beta, y, save_mean, save_invstd, running_mean, running_var);
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

void bn_backward_launch(Context& cx, const char* op, bool relu, const BnDims& d, const float* x,
                        const float* z, const float* dy, const float* gamma, const float* save_mean,
                        const float* save_invstd, float* dx, float* dgamma, float* dbeta) {
  if (d.c <= 0 || d.n * d.hw <= 0) return;
  check_dims(op, d);
  if (relu)
    bn_backward_kernel<true><<<unsigned(d.c), channel_threads(d.n * d.hw), 0, cx.stream>>>(
        d, x, z, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  else
    bn_backward_kernel<false><<<unsigned(d.c), channel_threads(d.n * d.hw), 0, cx.stream>>>(
        d, x, z, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  TB_CUDA_LAUNCH_CHECK(op, shape_str(d));
}

void bn_backward(void* ctx, OpCache&, const BnDims& d, const float* x, const float* dy,
                 const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
                 float* dgamma, float* dbeta) {
  bn_backward_launch(context(ctx), "batchnorm_backward", false, d, x, nullptr, dy, gamma, save_mean,
                     save_invstd, dx, dgamma, dbeta);
}

void bn_relu_backward(void* ctx, OpCache&, const BnDims& d, const float* x, const float* z,
                      const float* dz, const float* gamma, const float* save_mean,
                      const float* save_invstd, float* dx, float* dgamma, float* dbeta) {
  bn_backward_launch(context(ctx), "batchnorm_relu_backward", true, d, x, z, dz, gamma, save_mean,
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
