// The backend interface: one table of plain function pointers per device kind (ggml's habit).
// Memory (alloc, free, copies, synchronize) and one entry per op direction. src/ops holds the
// plain-loop reference of each op; backends/reference wraps those into a table, backends/cpu
// (oneDNN) and backends/cuda (cuDNN, cuBLASLt, our kernels) fill the same table with fast paths.
//
// Pointers passed to ops are device pointers of that backend. Ops run in order on the backend's
// stream; only synchronize() and download() wait. Gradients overwrite their outputs.
// A convolution node's directions run in the order forward, weight gradient, data gradient (the
// last two back to back), and nothing writes the node's x, W or dy in between: a backend may keep
// what one direction made of them for a later one (CUDA and CPU keep bf16 copies).
//
// OpCache: state a backend keeps per node between steps (oneDNN primitives, cuDNN descriptors
// and the algorithm chosen). The run owns one per node; the backend fills it on first use and
// reuses it every step, so a step creates nothing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "ops/batch.h"
#include "ops/batchnorm.h"
#include "ops/conv2d.h"
#include "ops/dense.h"
#include "ops/mlp_step.h"
#include "ops/optimizer.h"
#include "ops/pool.h"

namespace tb {

struct OpCache {
  void* impl = nullptr;
  void (*destroy)(void*) = nullptr;
  std::string note;  // how the backend runs the node, where it chose (`trainbench profile`)
  // Set where the node runs in another precision than the run's (CUDA bf16: a layer whose sizes
  // bf16's kernels refuse runs in tf32); `profile` draws its roofline against that peak.
  std::optional<Precision> precision;

  OpCache() = default;
  OpCache(const OpCache&) = delete;
  OpCache& operator=(const OpCache&) = delete;
  ~OpCache() {
    if (destroy) destroy(impl);
  }
  template <typename T>
  T* get() const {
    return static_cast<T*>(impl);
  }
  template <typename T>
  T* set(T* p) {
    impl = p;
    destroy = [](void* q) { delete static_cast<T*>(q); };
    return p;
  }
};

// Switches of the CUDA backend alone (a run elsewhere refuses them: cli/options.cpp).
struct CudaConfig {
  // bf16: hand cuDNN channels-last copies (activations NHWC, weights KRSC), which its tensor-core
  // kernels read as they are; from NCHW it transposes inside every call. The copies change layout
  // in the same pass that converts to bf16, so they cost no extra pass. The engine's own buffers
  // stay NCHW.
  bool bf16_nhwc = false;
  // Batch norm: where there are fewer channels than SMs and many values per channel, each channel
  // in slices over several blocks (then a combining pass) instead of one block each.
  bool bn_slices = true;
  // fp32: a one-hidden-layer MLP's training step as three kernels (Backend::mlp_step) instead of
  // about nine ops, for steps that are launch latency (fashion-mlp).
  bool fused_mlp = false;
};

struct BackendConfig {
  DeviceKind device = DeviceKind::cpu;
  int device_index = 0;
  Precision precision = Precision::fp32;
  int threads = 0;         // CPU threads; 0 = all cores the process may use
  bool reference = false;  // use the plain-loop reference backend (tests, debugging)
  // No algorithm chosen by timing (the CPU's convolutions run their first candidate; CUDA takes
  // cuDNN's heuristic ranking, deterministic algorithms only), so two runs with the same seed,
  // threads and machine give the same numbers to the bit.
  bool deterministic = false;
  // Record the training step once and replay it (CUDA graphs) where the backend can.
  bool graphs = true;
  // bf16: reuse bf16 copies where the operand has not changed (weights kept in bf16 by the
  // optimizer, CPU and CUDA; on CUDA also a convolution's input from its forward for its weight
  // gradient, dy from the weight gradient for the data gradient). Off: every call converts its own
  // operands, which the tests compare against; the numbers are the same.
  bool reuse_bf16 = true;
  // CPU (oneDNN): take NHWC activations, which the plan then uses for the run (Backend::nhwc);
  // off: NCHW, as every other backend.
  bool cpu_nhwc = true;
  // CPU fp32: a one-hidden-layer MLP's step as one parallel region (Backend::mlp_step); off, its
  // ops are issued one by one.
  bool cpu_fused_mlp = true;
  // CPU bf16 under NHWC: the maps between convolutions and batch norms in bf16
  // (Backend::bf16_maps); off: fp32, each convolution converting its input (to compare).
  bool bf16_maps = true;
  CudaConfig cuda{};
};

struct Backend {
  std::string name;  // "reference", "cpu-onednn", "cuda"
  DeviceKind device = DeviceKind::cpu;
  Precision precision = Precision::fp32;
  // The ops take activations in NHWC as well (the dims' layout; gather_batch's spec): the plan
  // then lays every 4-D activation out so. Others are handed NCHW only.
  bool nhwc = false;
  // A convolution's output gradient may be stored in bf16 (ConvDims::dy_bf16, BnDims::dx_bf16,
  // NHWC only): the plan then asks for it where the batch norm after the convolution is the
  // gradient's only writer and the convolution its only reader. CPU bf16 with reuse_bf16: the
  // convolution would convert dy to bf16 itself, so no number changes.
  bool bf16_conv_grads = false;
  // Activations between convolutions and batch norms may be stored in bf16 (ConvDims::x_bf16,
  // y_bf16, BnDims::x_bf16, y_bf16; NHWC only): the plan then asks for a convolution's output in
  // bf16 where batch norms alone read it, and for a batch norm's (or its fused ReLU's) where
  // convolutions alone read it. CPU bf16 (BackendConfig::bf16_maps): the convolution would round
  // its input to bf16 anyway; its output rounded before the batch norm changes the numbers a
  // little.
  bool bf16_maps = false;
  void* ctx = nullptr;  // backend-owned context
  void (*destroy)(void* ctx) = nullptr;

  // ---- memory ----
  void* (*alloc)(void* ctx, size_t bytes) = nullptr;  // zero-filled; throws Error on failure
  void (*free)(void* ctx, void* p) = nullptr;
  void (*upload)(void* ctx, void* dst, const void* src, size_t bytes) = nullptr;
  void (*download)(void* ctx, void* dst, const void* src, size_t bytes) = nullptr;
  void (*copy)(void* ctx, void* dst, const void* src, size_t bytes) = nullptr;  // device to device
  void (*fill)(void* ctx, float* dst, float value, int64_t count) = nullptr;
  void (*synchronize)(void* ctx) = nullptr;
  // CUDA: the context's cudaStream_t, for NCCL's sums to run in its order (comm/comm.h).
  void* (*native_stream)(void* ctx) = nullptr;

  // ---- data ----
  // ref::gather_batch; s.cursor, when set, is read on the device.
  void (*gather_batch)(void* ctx, const BatchSpec& s, const uint8_t* images, const uint8_t* labels,
                       const int32_t* indices, float* x, int32_t* y) = nullptr;

  // ---- ops ----
  // dense: relu_after fuses a ReLU into the forward (y = max(0, xW^T + b)).
  void (*dense_forward)(void* ctx, OpCache& c, const DenseDims& d, const float* x, const float* w,
                        const float* b, float* y, bool relu_after) = nullptr;
  void (*dense_backward)(void* ctx, OpCache& c, const DenseDims& d, const float* x, const float* w,
                         const float* dy, float* dx, float* dw, float* db) = nullptr;
  void (*relu_forward)(void* ctx, int64_t count, const float* x, float* y) = nullptr;
  void (*relu_backward)(void* ctx, int64_t count, const float* y, const float* dy,
                        float* dx) = nullptr;
  void (*add)(void* ctx, int64_t count, const float* a, const float* b, float* y) = nullptr;
  void (*softmax_ce)(void* ctx, int64_t n, int64_t classes, const float* logits,
                     const int32_t* labels, float grad_scale, float* dlogits,
                     float* metrics) = nullptr;

  void (*conv2d_forward)(void* ctx, OpCache& c, const ConvDims& d, const float* x, const float* w,
                         float* y) = nullptr;
  void (*conv2d_backward_data)(void* ctx, OpCache& c, const ConvDims& d, const float* dy,
                               const float* w, float* dx) = nullptr;
  void (*conv2d_backward_weights)(void* ctx, OpCache& c, const ConvDims& d, const float* x,
                                  const float* dy, float* dw) = nullptr;
  void (*batchnorm_forward_train)(void* ctx, OpCache& c, const BnDims& d, const BnParams& p,
                                  const float* x, const float* gamma, const float* beta, float* y,
                                  float* save_mean, float* save_invstd, float* running_mean,
                                  float* running_var) = nullptr;
  void (*batchnorm_forward_eval)(void* ctx, OpCache& c, const BnDims& d, const BnParams& p,
                                 const float* x, const float* gamma, const float* beta,
                                 const float* running_mean, const float* running_var,
                                 float* y) = nullptr;
  void (*batchnorm_backward)(void* ctx, OpCache& c, const BnDims& d, const float* x,
                             const float* dy, const float* gamma, const float* save_mean,
                             const float* save_invstd, float* dx, float* dgamma,
                             float* dbeta) = nullptr;
  // Optional (nullptr: the plan runs BN and the ReLU after it as two steps): batch norm with
  // that ReLU fused. The forwards write only z = max(bn(x), 0); the backward starts from the
  // ReLU's output z and its gradient dz (BN's dy = dz where z > 0, else 0).
  void (*batchnorm_relu_forward_train)(void* ctx, OpCache& c, const BnDims& d, const BnParams& p,
                                       const float* x, const float* gamma, const float* beta,
                                       float* z, float* save_mean, float* save_invstd,
                                       float* running_mean, float* running_var) = nullptr;
  void (*batchnorm_relu_forward_eval)(void* ctx, OpCache& c, const BnDims& d, const BnParams& p,
                                      const float* x, const float* gamma, const float* beta,
                                      const float* running_mean, const float* running_var,
                                      float* z) = nullptr;
  void (*batchnorm_relu_backward)(void* ctx, OpCache& c, const BnDims& d, const float* x,
                                  const float* z, const float* dz, const float* gamma,
                                  const float* save_mean, const float* save_invstd, float* dx,
                                  float* dgamma, float* dbeta) = nullptr;
  // Optional (nullptr: three nodes): batch norm, the residual add of `skip` after it and the
  // ReLU after that, forward in one pass: z = max(bn(x) + skip, 0). The backward needs no entry:
  // the ReLU's and the add's run as before and BN's reads the add's gradient.
  void (*batchnorm_add_relu_forward_train)(void* ctx, OpCache& c, const BnDims& d,
                                           const BnParams& p, const float* x, const float* skip,
                                           const float* gamma, const float* beta, float* z,
                                           float* save_mean, float* save_invstd,
                                           float* running_mean, float* running_var) = nullptr;
  void (*batchnorm_add_relu_forward_eval)(void* ctx, OpCache& c, const BnDims& d, const BnParams& p,
                                          const float* x, const float* skip, const float* gamma,
                                          const float* beta, const float* running_mean,
                                          const float* running_var, float* z) = nullptr;
  void (*maxpool_forward)(void* ctx, OpCache& c, const PoolDims& d, const float* x, float* y,
                          int32_t* argmax) = nullptr;
  void (*maxpool_backward)(void* ctx, OpCache& c, const PoolDims& d, const float* dy,
                           const int32_t* argmax, float* dx) = nullptr;
  // x [n, c, hw] (nchw) or [n, hw, c] (nhwc) -> y [n, c]
  void (*global_avgpool_forward)(void* ctx, int64_t n, int64_t c, int64_t hw, Layout layout,
                                 const float* x, float* y) = nullptr;
  void (*global_avgpool_backward)(void* ctx, int64_t n, int64_t c, int64_t hw, Layout layout,
                                  const float* dy, float* dx) = nullptr;

  // ---- parameters (optional) ----
  // The run's flat parameter array is params[0 .. count), with its values in place; count 0: the
  // array params is going away (another one registered since stays). One array at a time: a
  // second registration takes the derived copy over, and the first array's steps must be over. A
  // backend that keeps a copy derived from the parameters (CUDA bf16: the weights in bf16) builds
  // it here and keeps it current from then on: the optimizer entries update it with the parameters,
  // and upload, copy and fill into the array refresh it.
  void (*set_param_array)(void* ctx, const float* params, int64_t count) = nullptr;

  // ---- optimizers (one flat parameter array) ----
  // Adam's step count t is at->updates + 1, read on the device (StepCursor, ops/batch.h).
  void (*adam_update)(void* ctx, int64_t count, float* p, const float* g, float* m, float* v,
                      const AdamParams& hp, const StepCursor* at) = nullptr;
  void (*sgd_update)(void* ctx, int64_t count, float* p, const float* g, float* momentum_buf,
                     const SgdParams& hp) = nullptr;
  // The training step's last op: advance(*c) on the device.
  void (*advance_cursor)(void* ctx, StepCursor* c) = nullptr;

  // ---- fused steps (optional) ----
  // The whole of MlpStep except the cursor's advance, which the caller issues after it. Returns
  // false, having issued nothing, where it does not take these shapes or this precision.
  bool (*mlp_step)(void* ctx, const MlpStep& s) = nullptr;

  // ---- graphs (optional; nullptr: every op runs as it is issued) ----
  // Between graph_begin and graph_end the ops issued are recorded, not run. graph_end returns a
  // graph that graph_launch replays with the arguments they were issued with (pointers, sizes and
  // scalars baked in); graph_destroy frees it. While recording, nothing may wait for the device
  // (synchronize, download) or upload. graph_end throws Error, and leaves the backend issuing ops
  // normally again, when the recording failed.
  void (*graph_begin)(void* ctx) = nullptr;
  void* (*graph_end)(void* ctx) = nullptr;
  void (*graph_launch)(void* ctx, void* graph) = nullptr;
  void (*graph_destroy)(void* ctx, void* graph) = nullptr;

  // ---- device timers (optional; nullptr: a profile synchronizes around each node and reads the
  // host clock, which adds the synchronize's latency to every node) ----
  // timers_create makes `count` marks. timers_start holds the device back (a gate) until
  // timers_read, so the work issued in between runs back to back as the device runs it, not at
  // the pace the host issues it. timer_mark records mark i in stream order. timers_read opens the
  // gate, waits for mark count-1, writes ms[i] = milliseconds from mark 0 to mark i, and returns
  // false when the gate had let go on its own before (a timeout: the host took too long to issue
  // the pass, which then ran at the host's pace).
  void* (*timers_create)(void* ctx, int count) = nullptr;
  void (*timers_start)(void* ctx, void* timers) = nullptr;
  void (*timer_mark)(void* ctx, void* timers, int i) = nullptr;
  bool (*timers_read)(void* ctx, void* timers, int count, float* ms) = nullptr;
  void (*timers_destroy)(void* ctx, void* timers) = nullptr;

  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;
  ~Backend() {
    if (destroy) destroy(ctx);
  }
};

// The backends built into this binary, and whether each can run here (and why not).
struct BackendInfo {
  std::string name;
  DeviceKind device;
  bool built = false, usable = false;
  std::string why_not;
};
std::vector<BackendInfo> list_backends();

// Creates the backend for cfg; throws Error with a one-line reason if it is not built in, the
// device is not there, or the backend left a required table entry unset.
std::unique_ptr<Backend> make_backend(const BackendConfig& cfg);
// Throws Error naming the first required entry b leaves unset (every entry a training step calls;
// the optional ones, marked so above, are checked where they are used), or a group of optional
// entries (graphs, timers) set in part.
void check_backend_table(const Backend& b);

// "cpu", "cuda", "cuda:N" (every kind of DeviceKind by its name, with an index where it has
// several devices) -> kind and index; throws Error naming the kinds otherwise.
void parse_device(const std::string& s, DeviceKind* kind, int* index);

// Per-backend constructors (registry.cpp calls them).
std::unique_ptr<Backend> make_reference_backend(const BackendConfig& cfg);
std::unique_ptr<Backend> make_cpu_backend(const BackendConfig& cfg);
#ifdef TRAINBENCH_HAVE_CUDA
std::unique_ptr<Backend> make_cuda_backend(const BackendConfig& cfg);
int cuda_device_count();  // 0 when no driver or no GPU
#endif
#ifdef TRAINBENCH_HAVE_VULKAN
std::unique_ptr<Backend> make_vulkan_backend(const BackendConfig& cfg);
int vulkan_device_count();  // 0 when no loader or no device
#endif

}  // namespace tb
