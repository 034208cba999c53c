// Elementwise ops and small helpers on our own kernels: fill, ReLU forward/backward, add,
// softmax cross-entropy (forward + backward + metrics in one pass), gather_batch (cutting a
// normalised, optionally augmented batch out of the uint8 data set on the device), and the bias /
// column-sum kernels dense.cpp falls back to.
//
// Streaming kernels use 16-byte (float4) accesses when every pointer is 16-byte aligned, with a
// scalar tail; outputs may alias inputs (y = relu(y), y = a + y), so nothing is __restrict__.
#include <algorithm>
#include <cstdint>

#include "backends/cuda/cuda_context.h"
#include "backends/cuda/kernels.cuh"

namespace tb::cuda {
namespace {

constexpr int kThreads = 256;

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// ---- streaming map over one or two inputs ----
struct ReluF {
  __device__ float operator()(float x, float) const { return x > 0.f ? x : 0.f; }
};
struct ReluBwdF {
  __device__ float operator()(float y, float dy) const { return y > 0.f ? dy : 0.f; }
};
struct AddF {
  __device__ float operator()(float a, float b) const { return a + b; }
};

template <bool kTwo, class F>
__global__ void map_kernel(int64_t n, const float* a, const float* b, float* y, F f, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (int64_t i = tid; i < n4; i += stride) {
      const float4 va = a4[i];
      float4 vb = va;
      if (kTwo) vb = b4[i];
      float4 r;
      r.x = f(va.x, vb.x);
      r.y = f(va.y, vb.y);
      r.z = f(va.z, vb.z);
      r.w = f(va.w, vb.w);
      y4[i] = r;
    }
    done = n4 * 4;
  }
  for (int64_t i = done + tid; i < n; i += stride) y[i] = f(a[i], kTwo ? b[i] : 0.f);
}

template <bool kTwo, class F>
void launch_map(Context& cx, const char* op, int64_t n, const float* a, const float* b, float* y,
                F f) {
  if (n <= 0) return;
  const bool vec = aligned16(a) && aligned16(y) && (!kTwo || aligned16(b));
  map_kernel<kTwo><<<grid_for(cx, vec ? (n + 3) / 4 : n, kThreads), kThreads, 0, cx.stream>>>(
      n, a, b, y, f, vec);
  TB_CUDA_LAUNCH_CHECK(op, count_str(n));
}

__global__ void fill_kernel(float* y, float v, int64_t n, bool vec) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    float4* y4 = reinterpret_cast<float4*>(y);
    const float4 v4 = make_float4(v, v, v, v);
    for (int64_t i = tid; i < n4; i += stride) y4[i] = v4;
    done = n4 * 4;
  }
  for (int64_t i = done + tid; i < n; i += stride) y[i] = v;
}

// ---- softmax cross-entropy: one warp per row ----
__global__ void softmax_ce_kernel(int64_t n, int64_t k, const float* z, const int32_t* labels,
                                  float scale, float* dz, float* metrics) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  float loss_acc = 0.f, correct_acc = 0.f;  // meaningful in lane 0
  for (int64_t row = warp; row < n; row += warps) {
    const CeRow r =
        warp_softmax_ce_row(z + row * k, k, labels[row], scale, dz ? dz + row * k : nullptr);
    if (lane == 0) loss_acc += r.loss, correct_acc += r.right ? 1.f : 0.f;
  }
  // one atomic pair per block
  __shared__ float s_loss[kThreads / 32], s_correct[kThreads / 32];
  const int w = threadIdx.x >> 5;
  if (lane == 0) s_loss[w] = loss_acc, s_correct[w] = correct_acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float l = 0.f, c = 0.f;
    for (int i = 0; i < int(blockDim.x >> 5); ++i) l += s_loss[i], c += s_correct[i];
    atomicAdd(&metrics[0], l);
    atomicAdd(&metrics[1], c);
  }
}

void softmax_ce(void* ctx, int64_t n, int64_t classes, const float* logits, const int32_t* labels,
                float grad_scale, float* dlogits, float* metrics) {
  Context& cx = context(ctx);
  if (n <= 0 || classes <= 0) return;
  const int64_t blocks_needed = (n + (kThreads / 32) - 1) / (kThreads / 32);
  // Blocks add their sums to the metrics atomically, in whatever order they finish; one block
  // adds once, so a deterministic run gets the same loss to the bit.
  const unsigned blocks =
      cx.deterministic ? 1u : unsigned(std::min<int64_t>(blocks_needed, int64_t(cx.sm_count) * 8));
  softmax_ce_kernel<<<blocks, kThreads, 0, cx.stream>>>(n, classes, logits, labels, grad_scale,
                                                        dlogits, metrics);
  TB_CUDA_LAUNCH_CHECK("softmax_ce", rows_str(n, classes));
}

// ---- gather_batch: ref::gather_batch on the device ----
__global__ void gather_batch_kernel(BatchSpec s, const uint8_t* images, const uint8_t* labels,
                                    const int32_t* indices, float* x, int32_t* y) {
  const BatchAt at = batch_at(s);  // reads the cursor: same for every thread
  indices += at.first;
  const int64_t plane = int64_t(s.height) * s.width, image = plane * s.channels;
  const int64_t total = s.n * image;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t i = e / image;
    const int64_t rem = e - i * image;
    const int c = int(rem / plane);
    const int64_t pix = rem - int64_t(c) * plane;
    const int h = int(pix / s.width), w = int(pix - int64_t(h) * s.width);
    const int64_t src_image = indices[i];
    if (rem == 0) y[i] = labels[src_image];
    int dy = 0, dx = 0;
    bool flip = false;
    if (s.augment) {
      const uint64_t r = mix64(at.seed ^ mix64(uint64_t(at.row + i)));
      const uint64_t span = uint64_t(2 * s.pad + 1);
      dy = int(r % span) - s.pad;
      dx = int((r >> 16) % span) - s.pad;
      flip = (r >> 32) & 1;
    }
    const int sw = (flip ? s.width - 1 - w : w) + dx, sh = h + dy;
    float v = 0.f;
    if (sh >= 0 && sh < s.height && sw >= 0 && sw < s.width)
      v = scaled_pixel(s, images[src_image * image + c * plane + int64_t(sh) * s.width + sw]);
    x[e] = normalised_pixel(s, v, c);
  }
}

void gather_batch(void* ctx, const BatchSpec& s, const uint8_t* images, const uint8_t* labels,
                  const int32_t* indices, float* x, int32_t* y) {
  Context& cx = context(ctx);
  const int64_t total = s.n * s.channels * int64_t(s.height) * s.width;
  if (total <= 0) return;
  if (s.channels > 4)
    fail_msg("gather_batch", rows_str(s.n, s.channels), "at most 4 channels are supported");
  gather_batch_kernel<<<grid_for(cx, total, kThreads), kThreads, 0, cx.stream>>>(s, images, labels,
                                                                                 indices, x, y);
  TB_CUDA_LAUNCH_CHECK("gather_batch", rows_str(s.n, total / (s.n ? s.n : 1)));
}

// ---- dense helpers ----
__global__ void bias_act_kernel(int64_t n, int64_t cols, const float* b, bool relu, float* y) {
  const int64_t total = n * cols;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    float v = y[e];
    if (b) v += b[e % cols];
    y[e] = relu ? (v > 0.f ? v : 0.f) : v;
  }
}

// One thread per column, rows walked in order; adjacent threads read adjacent columns.
__global__ void column_sum_kernel(int64_t n, int64_t cols, const float* dy, float* db) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < cols; o += stride) {
    float acc = 0.f;
    for (int64_t i = 0; i < n; ++i) acc += dy[i * cols + o];
    db[o] = acc;
  }
}

}  // namespace

void launch_bias_act(Context& cx, int64_t n, int64_t cols, const float* b, bool relu, float* y) {
  if (n * cols <= 0) return;
  bias_act_kernel<<<grid_for(cx, n * cols, kThreads), kThreads, 0, cx.stream>>>(n, cols, b, relu,
                                                                                y);
  TB_CUDA_LAUNCH_CHECK("dense_forward (bias)", rows_str(n, cols));
}

void launch_column_sum(Context& cx, int64_t n, int64_t cols, const float* dy, float* db) {
  if (cols <= 0) return;
  column_sum_kernel<<<grid_for(cx, cols, kThreads), kThreads, 0, cx.stream>>>(n, cols, dy, db);
  TB_CUDA_LAUNCH_CHECK("dense_backward (bias gradient)", rows_str(n, cols));
}

void launch_fill(Context& cx, float* dst, float value, int64_t count) {
  if (count <= 0) return;
  const bool vec = aligned16(dst);
  fill_kernel<<<grid_for(cx, vec ? (count + 3) / 4 : count, kThreads), kThreads, 0, cx.stream>>>(
      dst, value, count, vec);
  TB_CUDA_LAUNCH_CHECK("fill", count_str(count));
}

void register_elementwise(Backend& b) {
  b.relu_forward = [](void* ctx, int64_t n, const float* x, float* y) {
    launch_map<false>(context(ctx), "relu_forward", n, x, nullptr, y, ReluF{});
  };
  b.relu_backward = [](void* ctx, int64_t n, const float* y, const float* dy, float* dx) {
    launch_map<true>(context(ctx), "relu_backward", n, y, dy, dx, ReluBwdF{});
  };
  b.add = [](void* ctx, int64_t n, const float* a, const float* x, float* y) {
    launch_map<true>(context(ctx), "add", n, a, x, y, AddF{});
  };
  b.softmax_ce = softmax_ce;
  b.gather_batch = gather_batch;
}

}  // namespace tb::cuda
