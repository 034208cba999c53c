// Max pooling (forward keeps the flat input index of each winner, as ref::maxpool_forward; the
// backward gathers, so it needs no zeroing pass and no atomics, and adds in the reference's order)
// and global average pooling, forward and backward.
#include <climits>
#include <cstdint>

#include "backends/cuda/cuda_context.h"

namespace tb::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void maxpool_forward_kernel(PoolDims d, int64_t oh, int64_t ow, const float* x, float* y,
                                       int32_t* argmax) {
  const int64_t total = d.n * d.c * oh * ow;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    const int64_t j = o % ow;
    const int64_t i = (o / ow) % oh;
    const int64_t nc = o / (ow * oh);
    float best = -__int_as_float(0x7f800000);
    int64_t best_at = -1;
    for (int64_t r = 0; r < d.kernel; ++r) {
      const int64_t h = i * d.stride - d.pad + r;
      if (h < 0 || h >= d.h) continue;
      for (int64_t s = 0; s < d.kernel; ++s) {
        const int64_t w = j * d.stride - d.pad + s;
        if (w < 0 || w >= d.w) continue;
        const int64_t at = (nc * d.h + h) * d.w + w;
        const float v = x[at];
        if (best_at < 0 || v > best) best = v, best_at = at;
      }
    }
    y[o] = best;
    argmax[o] = int32_t(best_at);
  }
}

// Each input cell sums dy over the outputs whose window covers it and whose winner it was,
// in increasing output order (the order ref::maxpool_backward adds in).
__global__ void maxpool_backward_kernel(PoolDims d, int64_t oh, int64_t ow, const float* dy,
                                        const int32_t* argmax, float* dx) {
  const int64_t total = d.n * d.c * d.h * d.w;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t at = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; at < total; at += stride) {
    const int64_t w = at % d.w;
    const int64_t h = (at / d.w) % d.h;
    const int64_t nc = at / (d.w * d.h);
    // outputs i with i*stride - pad <= h <= i*stride - pad + kernel - 1
    const int64_t hn = h + d.pad - d.kernel + 1, wn = w + d.pad - d.kernel + 1;
    const int64_t i0 = hn <= 0 ? 0 : (hn + d.stride - 1) / d.stride;
    const int64_t j0 = wn <= 0 ? 0 : (wn + d.stride - 1) / d.stride;
    const int64_t i1 = min((h + d.pad) / d.stride, oh - 1);
    const int64_t j1 = min((w + d.pad) / d.stride, ow - 1);
    float acc = 0.f;
    for (int64_t i = i0; i <= i1; ++i)
      for (int64_t j = j0; j <= j1; ++j) {
        const int64_t o = (nc * oh + i) * ow + j;
        if (argmax[o] == at) acc += dy[o];
      }
    dx[at] = acc;
  }
}

void maxpool_forward(void* ctx, OpCache&, const PoolDims& d, const float* x, float* y,
                     int32_t* argmax) {
  Context& cx = context(ctx);
  const int64_t oh = d.oh(), ow = d.ow(), total = d.n * d.c * oh * ow;
  if (total <= 0) return;
  if (d.n * d.c * d.h * d.w > INT32_MAX)
    fail_msg("maxpool_forward", shape_str(d), "input too large for int32 argmax indices");
  maxpool_forward_kernel<<<grid_for(cx, total, kThreads), kThreads, 0, cx.stream>>>(d, oh, ow, x, y,
                                                                                    argmax);
  TB_CUDA_LAUNCH_CHECK("maxpool_forward", shape_str(d));
}

void maxpool_backward(void* ctx, OpCache&, const PoolDims& d, const float* dy,
                      const int32_t* argmax, float* dx) {
  Context& cx = context(ctx);
  const int64_t total = d.n * d.c * d.h * d.w;
  if (total <= 0) return;
  maxpool_backward_kernel<<<grid_for(cx, total, kThreads), kThreads, 0, cx.stream>>>(
      d, d.oh(), d.ow(), dy, argmax, dx);
  TB_CUDA_LAUNCH_CHECK("maxpool_backward", shape_str(d));
}

// ---- global average pooling: one warp per (n, c) row ----
__global__ void avgpool_forward_kernel(int64_t rows, int64_t hw, const float* x, float* y) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t row = warp; row < rows; row += warps) {
    const float* xr = x + row * hw;
    float acc = 0.f;
    for (int64_t j = lane; j < hw; j += 32) acc += xr[j];
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) y[row] = acc / float(hw);
  }
}

__global__ void avgpool_backward_kernel(int64_t rows, int64_t hw, const float* dy, float* dx) {
  const int64_t total = rows * hw;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  // divide (not multiply by 1/hw) to match ref::global_avgpool_backward bit for bit
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride)
    dx[e] = dy[e / hw] / float(hw);
}

void global_avgpool_forward(void* ctx, int64_t n, int64_t c, int64_t hw, Layout, const float* x,
                            float* y) {
  Context& cx = context(ctx);
  const int64_t rows = n * c;
  if (rows <= 0 || hw <= 0) return;
  const int64_t warps_per_block = kThreads / 32;
  int64_t blocks = (rows + warps_per_block - 1) / warps_per_block;
  if (blocks > int64_t(cx.sm_count) * 16) blocks = int64_t(cx.sm_count) * 16;
  avgpool_forward_kernel<<<unsigned(blocks), kThreads, 0, cx.stream>>>(rows, hw, x, y);
  TB_CUDA_LAUNCH_CHECK("global_avgpool_forward", rows_str(rows, hw));
}

void global_avgpool_backward(void* ctx, int64_t n, int64_t c, int64_t hw, Layout, const float* dy,
                             float* dx) {
  Context& cx = context(ctx);
  const int64_t total = n * c * hw;
  if (total <= 0) return;
  avgpool_backward_kernel<<<grid_for(cx, total, kThreads), kThreads, 0, cx.stream>>>(n * c, hw, dy,
                                                                                     dx);
  TB_CUDA_LAUNCH_CHECK("global_avgpool_backward", rows_str(n * c, hw));
}

}  // namespace

void register_pool(Backend& b) {
  b.maxpool_forward = maxpool_forward;
  b.maxpool_backward = maxpool_backward;
  b.global_avgpool_forward = global_avgpool_forward;
  b.global_avgpool_backward = global_avgpool_backward;
}

}  // namespace tb::cuda
