// A one-hidden-layer MLP's whole training step in three kernels (Backend::mlp_step), for steps
// so small that each op is mostly launch latency: fashion-mlp's batch of 32 through
// 784 -> 128 -> 10 is about 10 MFLOP, and issued op by op it is nine kernels.
//   1. forward1: the data cut where the cursor stands (the same arithmetic as gather_batch) fused
//      into h = max(x W1^T + b1, 0); a warp per (row, hidden unit), lanes along the input.
//   2. head: one block. logits = h W2^T + b2, softmax cross-entropy (metrics added, rows in
//      order), dW2 and db2, dh = (dlogits W2) where h > 0, then Adam on W2 and b2.
//   3. backward1: a thread per parameter of W1 and b1: its gradient (x recomputed from the uint8
//      images) and its Adam update in one pass, so the gradient is never read back.
// fp32 throughout (no tensor cores), like the fp32 ops it replaces; the executor issues the
// cursor's advance after it. Gradients are written to grads as the separate ops would.
#include <cstdint>

#include "backends/cuda/cuda_context.h"
#include "backends/cuda/kernels.cuh"

namespace tb::cuda {
namespace {

constexpr int kWarpsForward = 4;
constexpr int kHeadThreads = 512;
constexpr int kBackwardThreads = 256;
constexpr size_t kHeadSharedBytes =
    48 * 1024 - 256;  // the static shared memory (block_adam) on top

// x[i, k] of the batch where the cursor stands, as gather_batch computes it (no augmentation).
struct Input {
  BatchSpec s;
  const uint8_t* images;
  const int32_t* indices;  // the epoch's permutation; the batch starts at batch_at(s).first
  int64_t in, plane;
  __device__ __forceinline__ float at(int64_t first, int64_t i, int64_t k) const {
    const int64_t img = indices[first + i];
    const float v = scaled_pixel(s, images[img * in + k]);
    if (s.channels == 1) return normalised_pixel(s, v, 0);  // Fashion-MNIST: no division
    return normalised_pixel(s, v, int(uint32_t(k) / uint32_t(plane)));
  }
};

AdamK adam_k(const AdamParams& hp) {
  return AdamK{hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, 0.f, 0.f};
}

// Block (x: kWarpsForward hidden units, y: row i); a warp per (i, o), lanes along the input.
__global__ void forward1_kernel(Input x, const uint8_t* labels, int64_t hidden, const float* w1,
                                const float* b1, float* h, int32_t* y) {
  const int64_t first = batch_at(x.s).first, i = blockIdx.y;
  const int lane = threadIdx.x & 31;
  const int64_t o = int64_t(blockIdx.x) * kWarpsForward + (threadIdx.x >> 5);
  if (blockIdx.x == 0 && threadIdx.x == 0) y[i] = labels[x.indices[first + i]];
  if (o >= hidden) return;
  const float* w = w1 + o * x.in;
  float acc = 0.f;
  for (int64_t k = lane; k < x.in; k += 32) acc += x.at(first, i, k) * w[k];
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) h[i * hidden + o] = fmaxf(acc + b1[o], 0.f);
}

// Shared memory: h [n, hidden], W2 [classes, hidden], logits and dlogits [n, classes], and per
// row its loss and whether it was right.
__global__ void head_kernel(int64_t n, int64_t hidden, int64_t classes, const float* h,
                            const int32_t* y, float* w2, float* m2, float* v2, float* g2, AdamK hp,
                            const StepCursor* at, float* logits_out, float* dlogits_out, float* dh,
                            float* metrics) {
  extern __shared__ float sh[];
  float* sh_h = sh;
  float* sh_w = sh_h + n * hidden;
  float* sh_z = sh_w + classes * hidden;
  float* sh_dz = sh_z + n * classes;
  float* sh_loss = sh_dz + n * classes;
  float* sh_right = sh_loss + n;
  const int64_t tid = threadIdx.x, threads = blockDim.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const float* b2 = w2 + classes * hidden;
  for (int64_t e = tid; e < n * hidden; e += threads) sh_h[e] = h[e];
  for (int64_t e = tid; e < classes * hidden; e += threads) sh_w[e] = w2[e];
  __syncthreads();
  // logits: a warp per (row, class), lanes along hidden
  for (int64_t e = warp; e < n * classes; e += warps) {
    const int64_t i = e / classes, c = e - i * classes;
    float acc = 0.f;
    for (int64_t o = lane; o < hidden; o += 32) acc += sh_h[i * hidden + o] * sh_w[c * hidden + o];
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) sh_z[e] = logits_out[e] = acc + b2[c];
  }
  __syncthreads();
  // softmax cross-entropy: a warp per row, softmax_ce's own row
  for (int64_t i = warp; i < n; i += warps) {
    const CeRow r =
        warp_softmax_ce_row(sh_z + i * classes, classes, y[i], 1.f / float(n), sh_dz + i * classes);
    if (lane == 0) sh_loss[i] = r.loss, sh_right[i] = r.right ? 1.f : 0.f;
  }
  __syncthreads();
  for (int64_t e = tid; e < n * classes; e += threads) dlogits_out[e] = sh_dz[e];
  if (tid == 0) {
    float loss = 0.f, right = 0.f;
    for (int64_t i = 0; i < n; ++i) loss += sh_loss[i], right += sh_right[i];
    metrics[0] += loss;
    metrics[1] += right;
  }
  // dh = dlogits W2 where h > 0 (W2 as it was for the forward)
  for (int64_t e = tid; e < n * hidden; e += threads) {
    const int64_t i = e / hidden, o = e - i * hidden;
    float acc = 0.f;
    for (int64_t c = 0; c < classes; ++c) acc += sh_dz[i * classes + c] * sh_w[c * hidden + o];
    dh[e] = sh_h[e] > 0.f ? acc : 0.f;
  }
  // dW2 = dlogits^T h and db2 = the column sums of dlogits, each updated by Adam at once
  const AdamK k = block_adam(hp, at);
  for (int64_t e = tid; e < classes * hidden + classes; e += threads) {
    float g = 0.f;
    if (e < classes * hidden) {
      const int64_t c = e / hidden, o = e - c * hidden;
      for (int64_t i = 0; i < n; ++i) g += sh_dz[i * classes + c] * sh_h[i * hidden + o];
    } else {
      const int64_t c = e - classes * hidden;
      for (int64_t i = 0; i < n; ++i) g += sh_dz[i * classes + c];
    }
    g2[e] = g;
    float p = w2[e], mm = m2[e], vv = v2[e];
    k(p, g, mm, vv);
    w2[e] = p, m2[e] = mm, v2[e] = vv;
  }
}

// A thread per parameter of [W1 | b1]: dW1[o, k] = sum_i dh[i, o] x[i, k], db1[o] = sum_i dh[i, o].
__global__ void backward1_kernel(Input x, int64_t hidden, const float* dh, float* w1, float* m1,
                                 float* v1, float* g1, AdamK hp, const StepCursor* at) {
  const AdamK k = block_adam(hp, at);
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t weights = hidden * x.in;
  if (e >= weights + hidden) return;
  const int64_t n = x.s.n, first = batch_at(x.s).first;
  float g = 0.f;
  if (e < weights) {
    const int64_t o = e / x.in, k = e - o * x.in;
    for (int64_t i = 0; i < n; ++i) g += dh[i * hidden + o] * x.at(first, i, k);
  } else {
    const int64_t o = e - weights;
    for (int64_t i = 0; i < n; ++i) g += dh[i * hidden + o];
  }
  g1[e] = g;
  float p = w1[e], mm = m1[e], vv = v1[e];
  k(p, g, mm, vv);
  w1[e] = p, m1[e] = mm, v1[e] = vv;
}

size_t head_shared_bytes(int64_t n, int64_t hidden, int64_t classes) {
  return size_t(n * hidden + classes * hidden + 2 * n * classes + 2 * n) * sizeof(float);
}

bool mlp_step(void* ctx, const MlpStep& s) {
  Context& cx = context(ctx);
  const int64_t n = s.batch.n;
  if (cx.precision != Precision::fp32 || s.batch.augment || !s.batch.cursor || n <= 0 ||
      s.batch.channels > 4 || s.in != int64_t(s.batch.channels) * s.batch.height * s.batch.width ||
      head_shared_bytes(n, s.hidden, s.classes) > kHeadSharedBytes)
    return false;
  const Input x{s.batch, s.images, s.indices, s.in, int64_t(s.batch.height) * s.batch.width};
  const AdamK hp = adam_k(s.adam);
  const int64_t w1_count = s.hidden * s.in + s.hidden;  // [W1 | b1]; then [W2 | b2]
  const dim3 forward_grid(unsigned((s.hidden + kWarpsForward - 1) / kWarpsForward), unsigned(n));
  forward1_kernel<<<forward_grid, kWarpsForward * 32, 0, cx.stream>>>(
      x, s.labels, s.hidden, s.params, s.params + s.hidden * s.in, s.h, s.y);
  TB_CUDA_LAUNCH_CHECK("mlp_step (forward)", rows_str(n, s.in));
  head_kernel<<<1, kHeadThreads, head_shared_bytes(n, s.hidden, s.classes), cx.stream>>>(
      n, s.hidden, s.classes, s.h, s.y, s.params + w1_count, s.m + w1_count, s.v + w1_count,
      s.grads + w1_count, hp, s.batch.cursor, s.logits, s.dlogits, s.dh, s.metrics);
  TB_CUDA_LAUNCH_CHECK("mlp_step (head)", rows_str(n, s.hidden));
  backward1_kernel<<<unsigned((w1_count + kBackwardThreads - 1) / kBackwardThreads),
                     kBackwardThreads, 0, cx.stream>>>(x, s.hidden, s.dh, s.params, s.m, s.v,
                                                       s.grads, hp, s.batch.cursor);
  TB_CUDA_LAUNCH_CHECK("mlp_step (backward)", rows_str(s.hidden, s.in));
  return true;
}

}  // namespace

void register_mlp_step(Backend& b) {
  b.mlp_step = mlp_step;
}

}  // namespace tb::cuda
