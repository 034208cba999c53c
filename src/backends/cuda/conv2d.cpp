// 2-D convolution (no bias) on cuDNN's convolution API: forward, backward data, backward filter.
// NCHW fp32 tensors, W [k, c, r, s]. Gradients overwrite (beta = 0).
//
// Per node and shape the OpCache keeps the descriptors and, per direction, the algorithm cuDNN
// measured fastest (cudnnFind*AlgorithmEx on the real buffers, into the shared workspace) on
// that direction's first call (or that another node of the same shape measured: the context keeps
// one algorithm per shape and direction; or that the same shape got at another batch size, with
// the workspace asked anew); later calls only launch.
//
// Precision: fp32 forces CUDNN_FMA_MATH (in cuDNN 8+ the default math lets fp32 convolutions run
// in TF32 on Ampere and newer). tf32 searches under CUDNN_TENSOR_OP_MATH and runs each algorithm
// in the math type cuDNN measured it with (as PyTorch does). CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
// is not used: it also lets cuDNN convert fp32 data down to fp16, which is not TF32.
// Deterministic runs (--deterministic) take cuDNN's heuristic ranking instead of timing the
// algorithms, and only algorithms that cuDNN marks deterministic.
// bf16: the descriptors are bf16 with fp32 compute (cuDNN's PSEUDO_BFLOAT16 configuration); each
// call hands cuDNN bf16 copies of its fp32 operands (bf16.cu) and converts its bf16 result back
// to fp32, so the rest of the engine stays fp32; tensor-core math as for tf32. Copies are made
// once where they can be (BackendConfig::reuse_bf16): weights come from the parameter array's
// bf16 mirror; the forward's copy of x and the weight gradient's copy of dy stay in the node's
// cache for the directions after them in the same step (Kept below). Per convolution and step
// that is 5 conversions instead of 9.
// A convolution whose channels (in or out) are not multiples of 8 runs in tf32 in a bf16 run (fp32
// descriptors, tensor-core math; the profile's note says so): cuDNN's bf16 tensor-core kernels
// want channels in multiples of 8, and ResNet's stem (3 channels in) is the one such layer.
// bf16 with CudaConfig::bf16_nhwc: the copies are channels-last (x, y, dy, dx NHWC; w, dw
// KRSC), made and undone in the same pass as the conversion, and the descriptors say NHWC, so
// cuDNN's tensor-core kernels need no transposes of their own. The weights' copy is then made
// per node at the forward (KRSC, not the mirror's KCRS) and reused by the data gradient.
#include <algorithm>
#include <array>
#include <cstdint>

#include "backends/cuda/cuda_context.h"

namespace tb::cuda {
namespace {

struct Direction {
  cudnnConvolutionDescriptor_t conv = nullptr;  // own descriptor: its math type is this direction's
  bool found = false;
  int algo = 0;
  size_t ws = 0;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  bool borrowed = false;  // the algorithm was chosen at another batch size (reuse_other_batch)
};

// A node's own bf16 copy of one operand, made by one direction (the producer) and read by a
// later one of the same step (the consumer): the executor runs a node's forward, then its weight
// gradient, then its data gradient, and nothing writes x, w or dy in between. x goes from the
// forward to the weight gradient, w (NHWC) from the forward to the data gradient, dy from the
// weight gradient to the data gradient.
// The consumer makes the buffer on its first call, which is issued, not recorded (a batch size's
// first training step runs op by op); from then on the producer converts into it. So a copy
// whose consumer never runs (the stem has no data gradient, an evaluation size no backward)
// costs no memory. `of` is the operand held; a read lets go of it, so a direction that finds
// another operand (or none) converts its own.
struct Kept {
  void* buf = nullptr;
  const float* of = nullptr;

  Kept() = default;
  Kept(const Kept&) = delete;
  Kept& operator=(const Kept&) = delete;
  ~Kept() {
    if (buf) cudaFree(buf);
  }
  // The producer: where to convert src, held from now on; null until the consumer has made the
  // buffer (then the call converts into its scratch).
  void* hold(const float* src) {
    of = buf ? src : nullptr;
    return buf;
  }
  // The consumer: the copy of src if it is the operand held, else null; held no longer either
  // way. Makes the buffer (count bf16 values) on the first call, for the steps after it.
  const void* take(const float* src, int64_t count, const char* op, const ConvDims& d) {
    const void* copy = buf && src == of ? buf : nullptr;
    of = nullptr;
    if (!buf) {
      const cudaError_t e = cudaMalloc(&buf, size_t(count) * 2);
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        buf = nullptr;
        fail_cuda(e, "cudaMalloc (a node's bf16 copy)", op, shape_str(d), __FILE__, __LINE__);
      }
    }
    return copy;
  }
};

struct ConvCache {
  ConvDims dims;
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  Direction fwd, bwd_data, bwd_filter;
  bool bf16 = false;    // bf16 copies: a bf16 run, channels in and out in multiples of 8
  Kept x16, w16, dy16;  // bf16 reuse: x and (NHWC) w from the forward, dy from the weight gradient

  ~ConvCache() {
    if (x) cudnnDestroyTensorDescriptor(x);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (w) cudnnDestroyFilterDescriptor(w);
    for (Direction* d : {&fwd, &bwd_data, &bwd_filter})
      if (d->conv) cudnnDestroyConvolutionDescriptor(d->conv);
  }
};

const char* kOpFwd = "conv2d_forward";
const char* kOpBwdData = "conv2d_backward_data";
const char* kOpBwdFilter = "conv2d_backward_weights";

bool fits_int(const ConvDims& d) {
  const int64_t lim = int64_t(1) << 31;
  return d.n < lim && d.c < lim && d.h < lim && d.w < lim && d.k < lim && d.r < lim && d.s < lim &&
         d.n * d.c * d.h * d.w < lim && d.n * d.k * d.oh() * d.ow() < lim;
}

ConvCache& cache_for(Context& cx, OpCache& c, const ConvDims& d, const char* op) {
  if (auto* cc = c.get<ConvCache>()) {
    check_cache_dims(op, cc->dims, d);
    return *cc;
  }
  if (!fits_int(d)) fail_msg(op, shape_str(d), "tensor too large for cuDNN's 32-bit sizes");
  if (d.oh() <= 0 || d.ow() <= 0)
    fail_msg(op, shape_str(d), "empty output (kernel larger than padded input)");
  auto* cc = c.set(new ConvCache());
  cc->dims = d;
  const std::string sh = shape_str(d);
  TB_CUDNN_CHECK(cudnnCreateTensorDescriptor(&cc->x), op, sh);
  TB_CUDNN_CHECK(cudnnCreateTensorDescriptor(&cc->y), op, sh);
  TB_CUDNN_CHECK(cudnnCreateFilterDescriptor(&cc->w), op, sh);
  cc->bf16 = bf16_layer(cx, c, d.c, d.k);
  const cudnnDataType_t dt = cc->bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  const cudnnTensorFormat_t fmt = cc->bf16 && cx.nhwc() ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  TB_CUDNN_CHECK(cudnnSetTensor4dDescriptor(cc->x, fmt, dt, int(d.n), int(d.c), int(d.h), int(d.w)),
                 op, sh);
  TB_CUDNN_CHECK(cudnnSetFilter4dDescriptor(cc->w, dt, fmt, int(d.k), int(d.c), int(d.r), int(d.s)),
                 op, sh);
  for (Direction* dir : {&cc->fwd, &cc->bwd_data, &cc->bwd_filter}) {
    TB_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&dir->conv), op, sh);
    TB_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(dir->conv, int(d.pad), int(d.pad), int(d.stride),
                                                   int(d.stride), 1, 1, CUDNN_CROSS_CORRELATION,
                                                   CUDNN_DATA_FLOAT),
                   op, sh);
    dir->math = cx.tensor_cores() ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
    TB_CUDNN_CHECK(cudnnSetConvolutionMathType(dir->conv, dir->math), op, sh);
  }
  int on = 0, oc = 0, oh = 0, ow = 0;
  TB_CUDNN_CHECK(
      cudnnGetConvolution2dForwardOutputDim(cc->fwd.conv, cc->x, cc->w, &on, &oc, &oh, &ow), op,
      sh);
  if (on != d.n || oc != d.k || oh != d.oh() || ow != d.ow())
    fail_msg(op, sh, "cuDNN computes a different output shape than ConvDims");
  TB_CUDNN_CHECK(cudnnSetTensor4dDescriptor(cc->y, fmt, dt, on, oc, oh, ow), op, sh);
  return *cc;
}

// Element counts of x, w and y. Under bf16 each direction hands cuDNN copies in the context's
// scratch (one slot per tensor, so dy sits in y's and dx in x's): the inputs converted before the
// call, the output converted back after it.
std::array<int64_t, 3> counts(const ConvDims& d) {
  return {d.n * d.c * d.h * d.w, d.k * d.c * d.r * d.s, d.n * d.k * d.oh() * d.ow()};
}

// bf16 copies of the NCHW fp32 tensor src = [n][c][hw] in the descriptors' layout (NHWC under
// bf16_nhwc), and back, each in one pass.
void to_conv_bf16(Context& cx, const float* src, void* dst, int64_t n, int64_t c, int64_t hw) {
  if (cx.nhwc())
    launch_nchw_to_nhwc_bf16(cx, src, dst, n, c, hw);
  else
    launch_to_bf16(cx, src, dst, n * c * hw);
}
void from_conv_bf16(Context& cx, const void* src, float* dst, int64_t n, int64_t c, int64_t hw) {
  if (cx.nhwc())
    launch_nhwc_bf16_to_nchw(cx, src, dst, n, c, hw);
  else
    launch_from_bf16(cx, src, dst, n * c * hw);
}

// Reuses an algorithm another node of the same shape measured; false when none has yet.
bool reuse(Context& cx, Direction& dir, const ConvDims& d, int direction, const char* op) {
  auto it = cx.conv_algos.find(conv_choice_key(d, direction));
  if (it == cx.conv_algos.end()) return false;
  dir.algo = it->second.algo;
  dir.ws = it->second.workspace;
  dir.math = it->second.math;
  dir.borrowed = it->second.borrowed;
  TB_CUDNN_CHECK(cudnnSetConvolutionMathType(dir.conv, dir.math), op, shape_str(d));
  dir.found = true;
  return true;
}

// Picks the fastest result that ran, fits the workspace, (for fp32) did not use tensor cores and
// (deterministic runs) gives the same bits every run; results come sorted by time (or, from the
// heuristic, by expected time).
template <typename Perf>
void pick(Context& cx, Direction& dir, const Perf* perf, int returned, const ConvDims& d,
          int direction, const char* op) {
  for (int i = 0; i < returned; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.memory > cx.workspace_bytes) continue;
    if (cx.deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
    // ALLOW_CONVERSION may turn fp32 data into fp16 (not TF32): never taken, whatever the search
    // ran it under.
    if (p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
    if (!cx.tensor_cores() && p.mathType == CUDNN_TENSOR_OP_MATH) continue;
    dir.algo = int(p.algo);
    dir.ws = p.memory;
    dir.math = cx.tensor_cores() ? p.mathType : CUDNN_FMA_MATH;
    TB_CUDNN_CHECK(cudnnSetConvolutionMathType(dir.conv, dir.math), op, shape_str(d));
    dir.found = true;
    cx.conv_algos[conv_choice_key(d, direction)] = Context::ConvAlgo{dir.algo, dir.ws, dir.math};
    return;
  }
  fail_msg(op, shape_str(d),
           "cuDNN found no algorithm that runs within the " +
               std::to_string(cx.workspace_bytes >> 20) + " MiB workspace");
}

// Reuses the algorithm chosen for the same shape at the nearest other batch size (the epoch's
// last, smaller batch; the test pass's last): the fastest rarely changes with n alone, and timing
// every candidate again costs that step a search per shape. Its workspace is asked for this n
// (workspace(algo, &bytes)); false where none was chosen or it does not fit. run_chosen times
// this size's own if the borrowed one fails to launch.
template <typename Workspace>
bool reuse_other_batch(Context& cx, Direction& dir, const ConvDims& d, int direction,
                       const char* op, Workspace workspace) {
  const auto key = conv_choice_key(d, direction);
  const Context::ConvAlgo* best = nullptr;
  int64_t best_gap = 0;
  for (const auto& [k, a] : cx.conv_algos) {
    if (a.borrowed || !std::equal(k.begin() + 1, k.end(), key.begin() + 1)) continue;  // but n
    const int64_t gap = k[0] > d.n ? k[0] - d.n : d.n - k[0];
    if (!best || gap < best_gap) best = &a, best_gap = gap;
  }
  if (!best) return false;
  TB_CUDNN_CHECK(cudnnSetConvolutionMathType(dir.conv, best->math), op, shape_str(d));
  size_t bytes = 0;
  if (workspace(best->algo, &bytes) != CUDNN_STATUS_SUCCESS || bytes > cx.workspace_bytes)
    return false;
  dir.algo = best->algo, dir.ws = bytes, dir.math = best->math;
  dir.found = dir.borrowed = true;
  cx.conv_algos[key] = Context::ConvAlgo{dir.algo, dir.ws, dir.math, true};
  return true;
}

// One direction's cuDNN calls, for convolve below. a and b are its inputs (forward: x, w; data
// gradient: w, dy; weight gradient: x, dy), out its output (y, dx, dw).
struct Forward {
  using Perf = cudnnConvolutionFwdAlgoPerf_t;
  static constexpr int kCount = CUDNN_CONVOLUTION_FWD_ALGO_COUNT, kDirection = 0;
  static constexpr const char* kCall = "cudnnConvolutionForward";
  static cudnnStatus_t find(Context& cx, const ConvCache& cc, const Direction& dir, const void* a,
                            const void* b, void* out, int* returned, Perf* perf) {
    return cudnnFindConvolutionForwardAlgorithmEx(cx.dnn, cc.x, a, cc.w, b, dir.conv, cc.y, out,
                                                  kCount, returned, perf, cx.workspace,
                                                  cx.workspace_bytes);
  }
  static cudnnStatus_t rank(Context& cx, const ConvCache& cc, const Direction& dir, int* returned,
                            Perf* perf) {
    return cudnnGetConvolutionForwardAlgorithm_v7(cx.dnn, cc.x, cc.w, dir.conv, cc.y, kCount,
                                                  returned, perf);
  }
  static cudnnStatus_t workspace(Context& cx, const ConvCache& cc, const Direction& dir, int algo,
                                 size_t* bytes) {
    return cudnnGetConvolutionForwardWorkspaceSize(cx.dnn, cc.x, cc.w, dir.conv, cc.y,
                                                   cudnnConvolutionFwdAlgo_t(algo), bytes);
  }
  static cudnnStatus_t launch(Context& cx, const ConvCache& cc, const Direction& dir, const void* a,
                              const void* b, void* out) {
    const float one = 1.f, zero = 0.f;
    return cudnnConvolutionForward(cx.dnn, &one, cc.x, a, cc.w, b, dir.conv,
                                   cudnnConvolutionFwdAlgo_t(dir.algo), cx.workspace, dir.ws, &zero,
                                   cc.y, out);
  }
};

struct BackwardData {
  using Perf = cudnnConvolutionBwdDataAlgoPerf_t;
  static constexpr int kCount = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, kDirection = 1;
  static constexpr const char* kCall = "cudnnConvolutionBackwardData";
  static cudnnStatus_t find(Context& cx, const ConvCache& cc, const Direction& dir, const void* a,
                            const void* b, void* out, int* returned, Perf* perf) {
    return cudnnFindConvolutionBackwardDataAlgorithmEx(cx.dnn, cc.w, a, cc.y, b, dir.conv, cc.x,
                                                       out, kCount, returned, perf, cx.workspace,
                                                       cx.workspace_bytes);
  }
  static cudnnStatus_t rank(Context& cx, const ConvCache& cc, const Direction& dir, int* returned,
                            Perf* perf) {
    return cudnnGetConvolutionBackwardDataAlgorithm_v7(cx.dnn, cc.w, cc.y, dir.conv, cc.x, kCount,
                                                       returned, perf);
  }
  static cudnnStatus_t workspace(Context& cx, const ConvCache& cc, const Direction& dir, int algo,
                                 size_t* bytes) {
    return cudnnGetConvolutionBackwardDataWorkspaceSize(cx.dnn, cc.w, cc.y, dir.conv, cc.x,
                                                        cudnnConvolutionBwdDataAlgo_t(algo), bytes);
  }
  static cudnnStatus_t launch(Context& cx, const ConvCache& cc, const Direction& dir, const void* a,
                              const void* b, void* out) {
    const float one = 1.f, zero = 0.f;
    return cudnnConvolutionBackwardData(cx.dnn, &one, cc.w, a, cc.y, b, dir.conv,
                                        cudnnConvolutionBwdDataAlgo_t(dir.algo), cx.workspace,
                                        dir.ws, &zero, cc.x, out);
  }
};

struct BackwardWeights {
  using Perf = cudnnConvolutionBwdFilterAlgoPerf_t;
  static constexpr int kCount = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, kDirection = 2;
  static constexpr const char* kCall = "cudnnConvolutionBackwardFilter";
  static cudnnStatus_t find(Context& cx, const ConvCache& cc, const Direction& dir, const void* a,
                            const void* b, void* out, int* returned, Perf* perf) {
    return cudnnFindConvolutionBackwardFilterAlgorithmEx(cx.dnn, cc.x, a, cc.y, b, dir.conv, cc.w,
                                                         out, kCount, returned, perf, cx.workspace,
                                                         cx.workspace_bytes);
  }
  static cudnnStatus_t rank(Context& cx, const ConvCache& cc, const Direction& dir, int* returned,
                            Perf* perf) {
    return cudnnGetConvolutionBackwardFilterAlgorithm_v7(cx.dnn, cc.x, cc.y, dir.conv, cc.w, kCount,
                                                         returned, perf);
  }
  static cudnnStatus_t workspace(Context& cx, const ConvCache& cc, const Direction& dir, int algo,
                                 size_t* bytes) {
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(
        cx.dnn, cc.x, cc.y, dir.conv, cc.w, cudnnConvolutionBwdFilterAlgo_t(algo), bytes);
  }
  static cudnnStatus_t launch(Context& cx, const ConvCache& cc, const Direction& dir, const void* a,
                              const void* b, void* out) {
    const float one = 1.f, zero = 0.f;
    return cudnnConvolutionBackwardFilter(cx.dnn, &one, cc.x, a, cc.y, b, dir.conv,
                                          cudnnConvolutionBwdFilterAlgo_t(dir.algo), cx.workspace,
                                          dir.ws, &zero, cc.w, out);
  }
};

// The algorithm of one direction, chosen once: reused from a node of the same shape (or, timed
// runs and borrow, the same shape at another batch size), else timed on the real buffers (find),
// or ranked by cuDNN's heuristic without running (deterministic runs: rank); both give results
// best first.
template <class Api>
void choose(Context& cx, const ConvCache& cc, Direction& dir, const ConvDims& d, const char* op,
            bool borrow, const void* a, const void* b, void* out) {
  if (dir.found || reuse(cx, dir, d, Api::kDirection, op)) return;
  auto workspace = [&](int algo, size_t* bytes) {
    return Api::workspace(cx, cc, dir, algo, bytes);
  };
  if (borrow && !cx.deterministic && reuse_other_batch(cx, dir, d, Api::kDirection, op, workspace))
    return;
  // Back to the math type the descriptor was made with (reuse_other_batch may have set another).
  TB_CUDNN_CHECK(cudnnSetConvolutionMathType(dir.conv, dir.math), op, shape_str(d));
  typename Api::Perf perf[Api::kCount];
  int returned = 0;
  const cudnnStatus_t s = cx.deterministic ? Api::rank(cx, cc, dir, &returned, perf)
                                           : Api::find(cx, cc, dir, a, b, out, &returned, perf);
  if (s != CUDNN_STATUS_SUCCESS)
    fail_cudnn(s, cx.deterministic ? "cudnnGetConvolution*Algorithm_v7" : "cudnnFindConvolution*Ex",
               op, shape_str(d), __FILE__, __LINE__);
  pick(cx, dir, perf, returned, d, Api::kDirection, op);
}

// Whether the stream is being recorded into a graph (where nothing may be timed or allocated).
bool capturing(const Context& cx) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(cx.stream, &status) == cudaSuccess &&
         status != cudaStreamCaptureStatusNone;
}

// One direction: its algorithm chosen where it is not yet, then launched. An algorithm borrowed
// from another batch size that fails to launch is forgotten, and this size's own is chosen and
// launched instead (on the first call at a size, which no graph records; a failure inside a
// recording, whose launches fail once the recording is broken, fails the recording instead of
// timing algorithms in it).
template <class Api>
void convolve(Context& cx, const ConvCache& cc, Direction& dir, const ConvDims& d, const char* op,
              const void* a, const void* b, void* out) {
  choose<Api>(cx, cc, dir, d, op, true, a, b, out);
  cudnnStatus_t s = Api::launch(cx, cc, dir, a, b, out);
  if (s != CUDNN_STATUS_SUCCESS && dir.borrowed && !capturing(cx)) {
    (void)cudaGetLastError();
    cx.conv_algos.erase(conv_choice_key(d, Api::kDirection));
    dir.found = dir.borrowed = false;
    dir.math = cx.tensor_cores() ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
    choose<Api>(cx, cc, dir, d, op, false, a, b, out);
    s = Api::launch(cx, cc, dir, a, b, out);
  }
  if (s != CUDNN_STATUS_SUCCESS) fail_cudnn(s, Api::kCall, op, shape_str(d), __FILE__, __LINE__);
}

void conv2d_forward(void* ctx, OpCache& c, const ConvDims& d, const float* x, const float* w,
                    float* y) {
  Context& cx = context(ctx);
  ConvCache& cc = cache_for(cx, c, d, kOpFwd);
  const auto n = counts(d);
  const void* in_x = x;
  const void* in_w = w;
  void* out_y = y;
  if (cc.bf16) {
    const auto h = bf16_operands(cx, n, kOpFwd);
    // A node's step starts here: a dy still held is an earlier step's (its data gradient did not
    // run), whatever now lies at that address.
    cc.dy16.of = nullptr;
    void* x16 = cx.reuse_bf16 ? cc.x16.hold(x) : nullptr;
    if (!x16) x16 = h[0];
    to_conv_bf16(cx, x, x16, d.n, d.c, d.h * d.w);
    if (cx.nhwc()) {  // KRSC: not the mirror's layout
      void* w16 = cx.reuse_bf16 ? cc.w16.hold(w) : nullptr;
      if (!w16) w16 = h[1];
      to_conv_bf16(cx, w, w16, d.k, d.c, d.r * d.s);
      in_w = w16;
    } else {
      in_w = weights16(cx, w, n[1], h[1]);
    }
    in_x = x16, out_y = h[2];
  }
  convolve<Forward>(cx, cc, cc.fwd, d, kOpFwd, in_x, in_w, out_y);
  if (cc.bf16) from_conv_bf16(cx, out_y, y, d.n, d.k, d.oh() * d.ow());
}

void conv2d_backward_data(void* ctx, OpCache& c, const ConvDims& d, const float* dy, const float* w,
                          float* dx) {
  Context& cx = context(ctx);
  ConvCache& cc = cache_for(cx, c, d, kOpBwdData);
  const auto n = counts(d);
  const void* in_dy = dy;
  const void* in_w = w;
  void* out_dx = dx;
  if (cc.bf16) {
    const auto h = bf16_operands(cx, n, kOpBwdData);
    in_dy = cx.reuse_bf16 ? cc.dy16.take(dy, n[2], kOpBwdData, d) : nullptr;
    if (!in_dy) to_conv_bf16(cx, dy, h[2], d.n, d.k, d.oh() * d.ow()), in_dy = h[2];
    if (cx.nhwc()) {
      in_w = cx.reuse_bf16 ? cc.w16.take(w, n[1], kOpBwdData, d) : nullptr;
      if (!in_w) to_conv_bf16(cx, w, h[1], d.k, d.c, d.r * d.s), in_w = h[1];
    } else {
      in_w = weights16(cx, w, n[1], h[1]);
    }
    out_dx = h[0];
  }
  convolve<BackwardData>(cx, cc, cc.bwd_data, d, kOpBwdData, in_w, in_dy, out_dx);
  if (cc.bf16) from_conv_bf16(cx, out_dx, dx, d.n, d.c, d.h * d.w);
}

void conv2d_backward_weights(void* ctx, OpCache& c, const ConvDims& d, const float* x,
                             const float* dy, float* dw) {
  Context& cx = context(ctx);
  ConvCache& cc = cache_for(cx, c, d, kOpBwdFilter);
  const auto n = counts(d);
  const void* in_x = x;
  const void* in_dy = dy;
  void* out_dw = dw;
  if (cc.bf16) {
    const auto h = bf16_operands(cx, n, kOpBwdFilter);
    in_x = cx.reuse_bf16 ? cc.x16.take(x, n[0], kOpBwdFilter, d) : nullptr;
    if (!in_x) to_conv_bf16(cx, x, h[0], d.n, d.c, d.h * d.w), in_x = h[0];
    void* dy16 = cx.reuse_bf16 ? cc.dy16.hold(dy) : nullptr;
    if (!dy16) dy16 = h[2];
    to_conv_bf16(cx, dy, dy16, d.n, d.k, d.oh() * d.ow());
    in_dy = dy16, out_dw = h[1];
  }
  convolve<BackwardWeights>(cx, cc, cc.bwd_filter, d, kOpBwdFilter, in_x, in_dy, out_dw);
  if (cc.bf16) from_conv_bf16(cx, out_dw, dw, d.k, d.c, d.r * d.s);
}

}  // namespace

void register_conv2d(Backend& b) {
  b.conv2d_forward = conv2d_forward;
  b.conv2d_backward_data = conv2d_backward_data;
  b.conv2d_backward_weights = conv2d_backward_weights;
}

}  // namespace tb::cuda
