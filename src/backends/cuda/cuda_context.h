// The CUDA backend's context: one device, one stream every op runs on (asynchronously), the
// cuBLASLt and cuDNN handles bound to that stream, one workspace both libraries share (ops run in
// stream order, so one buffer is enough), and the precision of the run.
//
// Error handling: every CUDA, cuDNN and cuBLASLt call goes through a CHECK macro that turns a
// failure into tb::Error naming the op, its shape and the library's error string. This header is
// included by the .cu files too, so it stays free of fmt (nvcc does not need to see it); the
// failure functions are defined in cuda_backend.cpp.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace tb::cuda {

struct Context {
  int device = 0;
  Precision precision = Precision::fp32;
  // Same seed, same bits: convolution algorithms from cuDNN's heuristic (not timed) and
  // deterministic only; the loss and accuracy sums in one block (a fixed order).
  bool deterministic = false;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  cudnnHandle_t dnn = nullptr;
  void* workspace = nullptr;  // shared by cuBLASLt and cuDNN; ops run in stream order
  size_t workspace_bytes = 0;
  int sm_count = 1;
  std::string device_name;

  // Convolution algorithms measured so far, shared by every node of the run: ResNet-50 repeats
  // each shape in many blocks, and measuring once per shape keeps the first step short.
  // Key: ConvDims (9 values), direction (0 fwd, 1 bwd data, 2 bwd filter).
  struct ConvAlgo {
    int algo = 0;
    size_t workspace = 0;
    cudnnMathType_t math = CUDNN_FMA_MATH;
    bool borrowed = false;  // taken from another batch size, not chosen at this one
  };
  std::map<std::array<int64_t, 11>, ConvAlgo> conv_algos;

  // Batch norm's per-slice partial results (batchnorm.cu), allocated with the context at the
  // most that its slicing can ask for: bn_partials_for(sm_count) floats.
  float* bn_partials = nullptr;
  // bf16 copies of the library ops' operands (bf16.cu), grown on first use.
  void* bf16_scratch = nullptr;
  size_t bf16_scratch_bytes = 0;
  // Buffers outgrown but still pointed into (by ops in flight, by recorded graphs): freed with
  // the context.
  std::vector<void*> retired;
  // Reuse of bf16 copies (BackendConfig::reuse_bf16): the run's parameter array
  // (Backend::set_param_array) mirrored in bf16, kept current by the optimizer and by writes into
  // the array, so weights are never converted per call (bf16.cu); a convolution's copies of x, w
  // and dy kept in its node's cache from one direction to the next (conv2d.cpp).
  bool reuse_bf16 = true;
  // bf16 convolutions on channels-last (NHWC, KRSC) copies (CudaConfig::bf16_nhwc; conv2d.cpp).
  bool bf16_nhwc = false;
  bool bn_slices = true;  // CudaConfig::bn_slices (batchnorm.cu)
  const float* params = nullptr;
  int64_t param_count = 0;
  void* params16 = nullptr;

  bool tensor_cores() const { return precision != Precision::fp32; }
  bool bf16() const { return precision == Precision::bf16; }
  bool nhwc() const { return bf16() && bf16_nhwc; }
};

// Whether a bf16 run takes a library layer of these sizes (a convolution's channels in and out, a
// dense layer's features in and out) in bf16: bf16 tensor-core kernels want rows on 16-byte
// boundaries, multiples of 8 values. Where not, the layer runs in tf32 (fp32 operands,
// tensor-core math) and its OpCache says so (note, precision).
inline bool bf16_layer(const Context& cx, OpCache& c, int64_t in, int64_t out) {
  if (!cx.bf16()) return false;
  if (in % 8 == 0 && out % 8 == 0) return true;
  c.note = "tf32: sizes not multiples of 8, as bf16 wants";
  c.precision = Precision::tf32;
  return false;
}

// Batch norm's slices (batchnorm.cu, slices_for) number fewer than 3 * sm_count over all
// channels, 3 partial floats each.
inline size_t bn_partials_for(int sm_count) {
  return size_t(9) * size_t(sm_count);
}

inline Context& context(void* ctx) {
  return *static_cast<Context*>(ctx);
}

// ---- failures (cuda_backend.cpp) ----
[[noreturn]] void fail_cuda(cudaError_t e, const char* call, const char* op,
                            const std::string& shape, const char* file, int line);
[[noreturn]] void fail_cudnn(cudnnStatus_t s, const char* call, const char* op,
                             const std::string& shape, const char* file, int line);
[[noreturn]] void fail_cublas(cublasStatus_t s, const char* call, const char* op,
                              const std::string& shape, const char* file, int line);
[[noreturn]] void fail_msg(const char* op, const std::string& shape, const std::string& what);

// `shape` is evaluated only when the call failed, so building the string costs nothing per step.
#define TB_CUDA_CHECK(call, op, shape)                                        \
  do {                                                                        \
    cudaError_t tb_e_ = (call);                                               \
    if (tb_e_ != cudaSuccess)                                                 \
      ::tb::cuda::fail_cuda(tb_e_, #call, (op), (shape), __FILE__, __LINE__); \
  } while (0)
#define TB_CUDNN_CHECK(call, op, shape)                                        \
  do {                                                                         \
    cudnnStatus_t tb_s_ = (call);                                              \
    if (tb_s_ != CUDNN_STATUS_SUCCESS)                                         \
      ::tb::cuda::fail_cudnn(tb_s_, #call, (op), (shape), __FILE__, __LINE__); \
  } while (0)
#define TB_CUBLAS_CHECK(call, op, shape)                                        \
  do {                                                                          \
    cublasStatus_t tb_s_ = (call);                                              \
    if (tb_s_ != CUBLAS_STATUS_SUCCESS)                                         \
      ::tb::cuda::fail_cublas(tb_s_, #call, (op), (shape), __FILE__, __LINE__); \
  } while (0)
// After a kernel launch: catches bad launch configurations at once (asynchronous faults surface at
// the next synchronize or download).
#define TB_CUDA_LAUNCH_CHECK(op, shape) TB_CUDA_CHECK(cudaGetLastError(), op, shape)

// ---- shapes for messages ----
std::string shape_str(const DenseDims& d);
std::string shape_str(const ConvDims& d);
std::string shape_str(const BnDims& d);
std::string shape_str(const PoolDims& d);
std::string count_str(int64_t count);
std::string rows_str(int64_t n, int64_t cols);

// Caches are per node and per batch size: the dims a cache was built for never change. A cheap
// check that the caller kept to that.
template <typename D>
inline bool same_dims(const D& a, const D& b) {
  static_assert(sizeof(D) % sizeof(int64_t) == 0);
  const int64_t* x = reinterpret_cast<const int64_t*>(&a);
  const int64_t* y = reinterpret_cast<const int64_t*>(&b);
  for (size_t i = 0; i < sizeof(D) / sizeof(int64_t); ++i)
    if (x[i] != y[i]) return false;
  return true;
}
template <typename D>
inline void check_cache_dims(const char* op, const D& cached, const D& now) {
  if (!same_dims(cached, now))
    fail_msg(op, shape_str(now),
             "this OpCache was built for " + shape_str(cached) +
                 "; caches are per node and per batch size, keep one per shape");
}

// Grid size for a grid-stride loop over `work` items with `threads` per block.
inline unsigned grid_for(const Context& cx, int64_t work, int threads = 256) {
  int64_t blocks = (work + threads - 1) / threads;
  const int64_t cap = int64_t(cx.sm_count) * 32;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return unsigned(blocks);
}

// ---- kernels shared with the library-backed ops (elementwise.cu) ----
// y[i, o] = act(y[i, o] + b[o]) over y [n, cols]; act = ReLU when relu.
void launch_bias_act(Context& cx, int64_t n, int64_t cols, const float* b, bool relu, float* y);
// db[o] = sum_i dy[i, o] over dy [n, cols] (overwrites db).
void launch_column_sum(Context& cx, int64_t n, int64_t cols, const float* dy, float* db);
void launch_fill(Context& cx, float* dst, float value, int64_t count);

// ---- bf16 operand copies (bf16.cu) ----
// Round-to-nearest-even copies between fp32 and bf16 buffers (dst/src are __nv_bfloat16*).
void launch_to_bf16(Context& cx, const float* src, void* dst, int64_t count);
void launch_from_bf16(Context& cx, const void* src, float* dst, int64_t count);
// The same with the layout changed: src [n][c][hw] fp32 to dst [n][hw][c] bf16, and back. For
// weights, n = k and hw = r*s: KCRS to KRSC.
void launch_nchw_to_nhwc_bf16(Context& cx, const float* src, void* dst, int64_t n, int64_t c,
                              int64_t hw);
void launch_nhwc_bf16_to_nchw(Context& cx, const void* src, float* dst, int64_t n, int64_t c,
                              int64_t hw);
// Three bf16 buffers of the given element counts in the context's scratch (256-byte aligned),
// valid until the next call.
std::array<void*, 3> bf16_operands(Context& cx, std::array<int64_t, 3> counts, const char* op);
// The bf16 weights w[0 .. count): the parameter array's mirror where w lies in it, else a copy
// made now in `slot`.
const void* weights16(Context& cx, const float* w, int64_t count, void* slot);
// Backend::set_param_array.
void set_param_array(void* ctx, const float* params, int64_t count);
// bytes at dst were just written (in stream order): refreshes the part of the bf16 mirror of the
// parameters that they overlap, if any.
void params_written(Context& cx, const void* dst, size_t bytes);

// ---- registration: each op file fills its entries of the table ----
void register_dense(Backend& b);        // dense.cpp
void register_conv2d(Backend& b);       // conv2d.cpp
void register_batchnorm(Backend& b);    // batchnorm.cu
void register_pool(Backend& b);         // pool.cu
void register_elementwise(Backend& b);  // elementwise.cu: relu, add, softmax_ce, gather_batch, fill
void register_optimizers(Backend& b);   // optimizer.cu
void register_timers(Backend& b);       // timers.cu: events behind a gate, for profiles
void register_mlp_step(Backend& b);     // mlp_step.cu: a small MLP's step in three kernels

}  // namespace tb::cuda
