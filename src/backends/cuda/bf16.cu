// Precision bf16: the engine keeps fp32 everywhere (master weights, optimizer state, activations,
// batch norm), and the library-backed ops (convolutions on cuDNN, dense layers on cuBLASLt) read
// bf16 copies of their operands, so their products run on bf16 tensor cores with fp32
// accumulation, as PyTorch's autocast does. Activations are copied just before the call into one
// scratch buffer of the context (ops run in stream order, so one buffer serves them all). The
// weights are not: the parameter array has a bf16 mirror that the optimizer writes with the fp32
// values (optimizer.cu) and that writes into the array from the host side refresh (upload, copy,
// fill: params_written), so a convolution's weights cost no conversion at all.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "backends/cuda/cuda_context.h"

namespace tb::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void to_bf16_kernel(const float* src, __nv_bfloat16* dst, int64_t count) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride)
    dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void from_bf16_kernel(const __nv_bfloat16* src, float* dst, int64_t count) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride)
    dst[i] = __bfloat162float(src[i]);
}

// Channels-last copies: per image, a [rows][cols] matrix transposed to [cols][rows] while it is
// converted ([c][hw] fp32 to [hw][c] bf16, and back), through 32x32 tiles in shared memory so
// that both the read and the write run along contiguous memory. Block 32 x 8; grid x over column
// tiles, y over row tiles and z over images (each grid-stride past 65535).
constexpr int kTile = 32, kTileRows = 8;

__device__ __forceinline__ float as_float(float v) {
  return v;
}
__device__ __forceinline__ float as_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
__device__ __forceinline__ void store(float* p, float v) {
  *p = v;
}
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

template <typename In, typename Out>
__global__ void transpose_convert_kernel(const In* src, Out* dst, int64_t n, int64_t rows,
                                         int64_t cols) {
  __shared__ float tile[kTile][kTile + 1];  // +1: no bank conflicts on the transposed read
  const int64_t col0 = int64_t(blockIdx.x) * kTile;
  for (int64_t img = blockIdx.z; img < n; img += gridDim.z)
    for (int64_t row0 = int64_t(blockIdx.y) * kTile; row0 < rows;
         row0 += int64_t(gridDim.y) * kTile) {
      const In* in = src + img * rows * cols;
      Out* out = dst + img * rows * cols;
      for (int r = threadIdx.y; r < kTile; r += kTileRows) {
        const int64_t row = row0 + r, col = col0 + threadIdx.x;
        tile[r][threadIdx.x] = row < rows && col < cols ? as_float(in[row * cols + col]) : 0.f;
      }
      __syncthreads();
      for (int r = threadIdx.y; r < kTile; r += kTileRows) {  // out row = in column col0 + r
        const int64_t col = col0 + r, row = row0 + threadIdx.x;
        if (row < rows && col < cols) store(out + col * rows + row, tile[threadIdx.x][r]);
      }
      __syncthreads();
    }
}

template <typename In, typename Out>
void launch_transpose_convert(Context& cx, const In* src, Out* dst, int64_t n, int64_t rows,
                              int64_t cols, const char* op) {
  if (n <= 0 || rows <= 0 || cols <= 0) return;
  const dim3 grid(unsigned((cols + kTile - 1) / kTile),
                  unsigned(std::min<int64_t>((rows + kTile - 1) / kTile, 65535)),
                  unsigned(std::min<int64_t>(n, 65535)));
  transpose_convert_kernel<<<grid, dim3(kTile, kTileRows), 0, cx.stream>>>(src, dst, n, rows, cols);
  TB_CUDA_LAUNCH_CHECK(op, rows_str(n, rows * cols));
}

}  // namespace

void launch_nchw_to_nhwc_bf16(Context& cx, const float* src, void* dst, int64_t n, int64_t c,
                              int64_t hw) {
  launch_transpose_convert(cx, src, static_cast<__nv_bfloat16*>(dst), n, c, hw,
                           "nchw_to_nhwc_bf16");
}

void launch_nhwc_bf16_to_nchw(Context& cx, const void* src, float* dst, int64_t n, int64_t c,
                              int64_t hw) {
  launch_transpose_convert(cx, static_cast<const __nv_bfloat16*>(src), dst, n, hw, c,
                           "nhwc_bf16_to_nchw");
}

void launch_to_bf16(Context& cx, const float* src, void* dst, int64_t count) {
  if (count <= 0) return;
  to_bf16_kernel<<<grid_for(cx, count, kThreads), kThreads, 0, cx.stream>>>(
      src, static_cast<__nv_bfloat16*>(dst), count);
  TB_CUDA_LAUNCH_CHECK("to_bf16", count_str(count));
}

void launch_from_bf16(Context& cx, const void* src, float* dst, int64_t count) {
  if (count <= 0) return;
  from_bf16_kernel<<<grid_for(cx, count, kThreads), kThreads, 0, cx.stream>>>(
      static_cast<const __nv_bfloat16*>(src), dst, count);
  TB_CUDA_LAUNCH_CHECK("from_bf16", count_str(count));
}

std::array<void*, 3> bf16_operands(Context& cx, std::array<int64_t, 3> counts, const char* op) {
  size_t offsets[3], total = 0;
  for (int i = 0; i < 3; ++i) {
    offsets[i] = total;
    total += (size_t(counts[i]) * 2 + 255) / 256 * 256;  // 2 bytes each, 256-byte aligned
  }
  if (total > cx.bf16_scratch_bytes) {
    // Grows on an op's first call at a size, which runs before any graph is recorded at it. The
    // old buffer is kept to the end (Context::retired): ops issued before, and graphs recorded at
    // smaller sizes, still point into it.
    if (cx.bf16_scratch) cx.retired.push_back(cx.bf16_scratch);
    cx.bf16_scratch = nullptr, cx.bf16_scratch_bytes = 0;
    const cudaError_t e = cudaMalloc(&cx.bf16_scratch, total);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      cx.bf16_scratch = nullptr;
      fail_cuda(e, "cudaMalloc (bf16 operand copies)", op, count_str(int64_t(total)), __FILE__,
                __LINE__);
    }
    cx.bf16_scratch_bytes = total;
  }
  char* base = static_cast<char*>(cx.bf16_scratch);
  return {base + offsets[0], base + offsets[1], base + offsets[2]};
}

const void* weights16(Context& cx, const float* w, int64_t count, void* slot) {
  // The mirror where it holds all of w at a 16-byte boundary (what tensor-core kernels load
  // from; an algorithm measured on one node's weights also serves other nodes of that shape).
  if (cx.params16 && w >= cx.params && w + count <= cx.params + cx.param_count &&
      (w - cx.params) % 8 == 0)
    return static_cast<const __nv_bfloat16*>(cx.params16) + (w - cx.params);
  launch_to_bf16(cx, w, slot, count);
  return slot;
}

void set_param_array(void* ctx, const float* params, int64_t count) {
  Context& cx = context(ctx);
  if (count <= 0 && params != cx.params) return;  // letting go of an array not (or no longer) ours
  if (cx.params16 && count <= 0) {
    // Let go of (the executor's graphs are gone by then): wait for the kernels issued before.
    // Never throws: an error shows at the next checked call.
    (void)cudaStreamSynchronize(cx.stream);
    cudaFree(cx.params16);
    (void)cudaGetLastError();
  } else if (cx.params16) {
    cx.retired.push_back(cx.params16);  // replaced: graphs recorded with it may still run
  }
  cx.params = nullptr, cx.param_count = 0, cx.params16 = nullptr;
  if (!params || count <= 0 || !cx.bf16() || !cx.reuse_bf16) return;
  const cudaError_t e = cudaMalloc(&cx.params16, size_t(count) * 2);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    cx.params16 = nullptr;
    fail_cuda(e, "cudaMalloc (bf16 weights)", "set_param_array", count_str(count), __FILE__,
              __LINE__);
  }
  cx.params = params, cx.param_count = count;
  launch_to_bf16(cx, params, cx.params16, count);
}

void params_written(Context& cx, const void* dst, size_t bytes) {
  if (!cx.params16 || bytes == 0) return;
  const char* lo =
      std::max(static_cast<const char*>(dst), reinterpret_cast<const char*>(cx.params));
  const char* hi = std::min(static_cast<const char*>(dst) + bytes,
                            reinterpret_cast<const char*>(cx.params + cx.param_count));
  if (lo >= hi) return;
  // Every float the bytes touch, also one written only in part.
  const int64_t first = (lo - reinterpret_cast<const char*>(cx.params)) / 4;
  const int64_t last = (hi - reinterpret_cast<const char*>(cx.params) + 3) / 4;
  launch_to_bf16(cx, cx.params + first, static_cast<__nv_bfloat16*>(cx.params16) + first,
                 last - first);
}

}  // namespace tb::cuda
