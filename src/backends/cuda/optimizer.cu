// Optimizers over the one flat parameter array: one launch per step covers every parameter.
// 16-byte accesses when all arrays are 16-byte aligned, scalar tail. Adam's step count comes from
// the StepCursor in device memory (so a recorded step replays with the right one); each block
// computes the bias corrections from it once, in double as ref::adam_update.
// bf16 runs: the update of the whole parameter array also writes the array's bf16 mirror (p16,
// bf16.cu), so the next step's convolutions read bf16 weights without a conversion pass.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "backends/cuda/cuda_context.h"
#include "backends/cuda/kernels.cuh"

namespace tb::cuda {
namespace {

constexpr int kThreads = 256;

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

__device__ __forceinline__ void store16(__nv_bfloat16* p16, int64_t i, float4 v) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  reinterpret_cast<__nv_bfloat162*>(p16 + i)[0] = lo;
  reinterpret_cast<__nv_bfloat162*>(p16 + i)[1] = hi;
}

__global__ void adam_kernel(int64_t n, float* p, const float* g, float* m, float* v, AdamK hp,
                            const StepCursor* at, bool vec, __nv_bfloat16* p16) {
  const AdamK k = block_adam(hp, at);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    float4* p4 = reinterpret_cast<float4*>(p);
    const float4* g4 = reinterpret_cast<const float4*>(g);
    float4* m4 = reinterpret_cast<float4*>(m);
    float4* v4 = reinterpret_cast<float4*>(v);
    for (int64_t i = tid; i < n4; i += stride) {
      float4 pp = p4[i], mm = m4[i], vv = v4[i];
      const float4 gg = g4[i];
      k(pp.x, gg.x, mm.x, vv.x);
      k(pp.y, gg.y, mm.y, vv.y);
      k(pp.z, gg.z, mm.z, vv.z);
      k(pp.w, gg.w, mm.w, vv.w);
      p4[i] = pp, m4[i] = mm, v4[i] = vv;
      if (p16) store16(p16, 4 * i, pp);
    }
    done = n4 * 4;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    float pp = p[i], mm = m[i], vv = v[i];
    k(pp, g[i], mm, vv);
    p[i] = pp, m[i] = mm, v[i] = vv;
    if (p16) p16[i] = __float2bfloat16_rn(pp);
  }
}

// As ref::sgd_update, operation for operation.
__global__ void sgd_kernel(int64_t n, float* p, const float* g, float* buf, SgdParams hp,
                           __nv_bfloat16* p16) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float gi = g[i] + hp.weight_decay * p[i];
    if (hp.momentum != 0.f) {
      const float b = hp.momentum * buf[i] + gi;
      buf[i] = b;
      gi = hp.nesterov ? gi + hp.momentum * b : b;
    }
    p[i] -= hp.lr * gi;
    if (p16) p16[i] = __float2bfloat16_rn(p[i]);
  }
}

// The bf16 mirror to write beside p, when p is the whole parameter array; null otherwise.
__nv_bfloat16* mirror_of(const Context& cx, const float* p, int64_t count) {
  return cx.params16 && p == cx.params && count == cx.param_count
             ? static_cast<__nv_bfloat16*>(cx.params16)
             : nullptr;
}

void adam_update(void* ctx, int64_t count, float* p, const float* g, float* m, float* v,
                 const AdamParams& hp, const StepCursor* at) {
  Context& cx = context(ctx);
  if (count <= 0) return;
  const AdamK k{hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, 0.f, 0.f};
  const bool vec = aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v);
  __nv_bfloat16* p16 = mirror_of(cx, p, count);
  adam_kernel<<<grid_for(cx, vec ? (count + 3) / 4 : count, kThreads), kThreads, 0, cx.stream>>>(
      count, p, g, m, v, k, at, vec, p16);
  TB_CUDA_LAUNCH_CHECK("adam_update", count_str(count));
  if (!p16) params_written(cx, p, size_t(count) * sizeof(float));  // part of the array, if any
}

void sgd_update(void* ctx, int64_t count, float* p, const float* g, float* buf,
                const SgdParams& hp) {
  Context& cx = context(ctx);
  if (count <= 0) return;
  __nv_bfloat16* p16 = mirror_of(cx, p, count);
  sgd_kernel<<<grid_for(cx, count, kThreads), kThreads, 0, cx.stream>>>(count, p, g, buf, hp, p16);
  TB_CUDA_LAUNCH_CHECK("sgd_update", count_str(count));
  if (!p16) params_written(cx, p, size_t(count) * sizeof(float));
}

__global__ void advance_kernel(StepCursor* c) {
  advance(*c);
}

void advance_cursor(void* ctx, StepCursor* c) {
  Context& cx = context(ctx);
  advance_kernel<<<1, 1, 0, cx.stream>>>(c);
  TB_CUDA_LAUNCH_CHECK("advance_cursor", "1 cursor");
}

}  // namespace

void register_optimizers(Backend& b) {
  b.adam_update = adam_update;
  b.sgd_update = sgd_update;
  b.advance_cursor = advance_cursor;
}

}  // namespace tb::cuda
