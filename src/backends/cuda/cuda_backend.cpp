// The CUDA backend: device memory, the stream, the library handles, and the table every op file
// fills (dense.cpp and conv2d.cpp through cuBLASLt and cuDNN, the rest our own kernels).
// Everything runs on the context's one stream, asynchronously; only download() and synchronize()
// wait for it.
#include <cuda_runtime.h>
#include <fmt/format.h>
#ifdef TRAINBENCH_HAVE_NCCL
#include <dlfcn.h>
#include <nccl.h>
#endif

#include "backends/backend.h"
#include "backends/cuda/cublaslt.h"
#include "backends/cuda/cuda_context.h"
#include "backends/cuda/cuda_info.h"
#include "core/error.h"

namespace tb {

namespace cuda {

// ---- failures ----
namespace {
std::string where(const char* file, int line) {
  std::string f = file;
  auto at = f.rfind("/src/");
  if (at != std::string::npos) f = f.substr(at + 1);
  return fmt::format("{}:{}", f, line);
}
}  // namespace

void fail_cuda(cudaError_t e, const char* call, const char* op, const std::string& shape,
               const char* file, int line) {
  (void)cudaGetLastError();  // clear a non-sticky error so the next call does not see it again
  std::string hint;
  if (e == cudaErrorMemoryAllocation) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
      hint = fmt::format(" ({} MiB of {} MiB free; try a smaller --batch)", free_b >> 20,
                         total_b >> 20);
  } else if (e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure) {
    hint =
        " (a kernel faulted; the fault may come from an earlier op on the stream: rerun with "
        "CUDA_LAUNCH_BLOCKING=1 to find it)";
  }
  throw Error(fmt::format("cuda {} {}: {} failed: {} ({}){} [{}]", op, shape, call,
                          cudaGetErrorString(e), cudaGetErrorName(e), hint, where(file, line)));
}

void fail_cudnn(cudnnStatus_t s, const char* call, const char* op, const std::string& shape,
                const char* file, int line) {
  char last[512] = {0};
  cudnnGetLastErrorString(last, sizeof(last));
  throw Error(fmt::format("cuda {} {}: {} failed: {}{}{} [{}]", op, shape, call,
                          cudnnGetErrorString(s), last[0] ? ": " : "", last, where(file, line)));
}

void fail_cublas(cublasStatus_t s, const char* call, const char* op, const std::string& shape,
                 const char* file, int line) {
  throw Error(fmt::format("cuda {} {}: {} failed: {} ({}) [{}]", op, shape, call,
                          cublaslt().GetStatusString(s), cublaslt().GetStatusName(s),
                          where(file, line)));
}

void fail_msg(const char* op, const std::string& shape, const std::string& what) {
  throw Error(fmt::format("cuda {} {}: {}", op, shape, what));
}

std::string shape_str(const DenseDims& d) {
  return fmt::format("[n={}, in={}, out={}]", d.n, d.in, d.out);
}
std::string shape_str(const ConvDims& d) {
  return fmt::format("[x {}x{}x{}x{}, w {}x{}x{}x{}, stride {}, pad {}]", d.n, d.c, d.h, d.w, d.k,
                     d.c, d.r, d.s, d.stride, d.pad);
}
std::string shape_str(const BnDims& d) {
  return fmt::format("[n={}, c={}, hw={}]", d.n, d.c, d.hw);
}
std::string shape_str(const PoolDims& d) {
  return fmt::format("[x {}x{}x{}x{}, kernel {}, stride {}, pad {}]", d.n, d.c, d.h, d.w, d.kernel,
                     d.stride, d.pad);
}
std::string count_str(int64_t count) {
  return fmt::format("[{} elements]", count);
}
std::string rows_str(int64_t n, int64_t cols) {
  return fmt::format("[{} x {}]", n, cols);
}

// ---- memory ----
namespace {

void* alloc(void* ctx, size_t bytes) {
  Context& cx = context(ctx);
  TB_CUDA_CHECK(cudaSetDevice(cx.device), "alloc", fmt::format("[{} bytes]", bytes));
  // Rounded up so every buffer starts and ends on 256 bytes (what cuBLASLt and vector loads like).
  const size_t rounded = bytes == 0 ? 256 : (bytes + 255) / 256 * 256;
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, rounded);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    // What a run may still count on: cudaMalloc hands out 2 MiB pages, and the executor asks for
    // five buffers, so 16 MiB of what is free may go to rounding (never report 0: "unknown").
    const size_t slack = size_t(16) << 20;
    throw OutOfMemory(
        fmt::format("cuda: out of GPU memory on {}: asked for {} bytes ({:.1f} MiB), {:.1f} MiB "
                    "free of {:.1f} MiB ({}); try a smaller --batch",
                    cx.device_name, bytes, bytes / 1048576.0, free_b / 1048576.0,
                    total_b / 1048576.0, cudaGetErrorString(e)),
        bytes, free_b > slack ? free_b - slack : 1);
  }
  TB_CUDA_CHECK(cudaMemsetAsync(p, 0, rounded, cx.stream), "alloc",
                fmt::format("[{} bytes]", bytes));
  return p;
}

void free_(void* ctx, void* p) {
  // Never throws: frees run in destructors, also while an error unwinds.
  if (p) {
    cudaFree(p);
    (void)cudaGetLastError();
  }
  (void)ctx;
}

// Pageable host memory is staged by the driver before cudaMemcpyAsync returns, so the caller may
// reuse `src` at once; the copy itself stays in stream order.
void upload(void* ctx, void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  Context& cx = context(ctx);
  TB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cx.stream), "upload",
                fmt::format("[{} bytes]", bytes));
  params_written(cx, dst, bytes);
}

void download(void* ctx, void* dst, const void* src, size_t bytes) {
  Context& cx = context(ctx);
  if (bytes)
    TB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cx.stream), "download",
                  fmt::format("[{} bytes]", bytes));
  TB_CUDA_CHECK(cudaStreamSynchronize(cx.stream), "download (waiting for the stream)",
                fmt::format("[{} bytes]", bytes));
}

void copy(void* ctx, void* dst, const void* src, size_t bytes) {
  if (!bytes || dst == src) return;
  Context& cx = context(ctx);
  TB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cx.stream), "copy",
                fmt::format("[{} bytes]", bytes));
  params_written(cx, dst, bytes);
}

void fill(void* ctx, float* dst, float value, int64_t count) {
  if (count <= 0) return;
  launch_fill(context(ctx), dst, value, count);
  params_written(context(ctx), dst, size_t(count) * sizeof(float));
}

void synchronize(void* ctx) {
  Context& cx = context(ctx);
  TB_CUDA_CHECK(cudaStreamSynchronize(cx.stream), "synchronize", std::string("(the stream)"));
  TB_CUDA_CHECK(cudaGetLastError(), "synchronize", std::string("(an earlier launch)"));
}

// ---- graphs: the step's ops captured from the stream once, then replayed with one launch ----
struct Graph {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
};

void graph_begin(void* ctx) {
  Context& cx = context(ctx);
  // Thread-local: only this thread's unsafe calls (a synchronize, a cudaMalloc) break the capture.
  TB_CUDA_CHECK(cudaStreamBeginCapture(cx.stream, cudaStreamCaptureModeThreadLocal), "graph_begin",
                std::string("(the stream)"));
}

void graph_destroy(void* ctx, void* p) {
  (void)ctx;
  auto* g = static_cast<Graph*>(p);
  if (!g) return;
  if (g->exec) cudaGraphExecDestroy(g->exec);
  if (g->graph) cudaGraphDestroy(g->graph);
  (void)cudaGetLastError();
  delete g;
}

void* graph_end(void* ctx) {
  Context& cx = context(ctx);
  auto* g = new Graph();
  const cudaError_t e = cudaStreamEndCapture(cx.stream, &g->graph);  // ends it also when it failed
  if (e != cudaSuccess) {
    graph_destroy(ctx, g);
    fail_msg("graph_end", "(the stream)",
             fmt::format("recording the step failed: {} ({})", cudaGetErrorString(e),
                         cudaGetErrorName(e)));
  }
  const cudaError_t ei = cudaGraphInstantiate(&g->exec, g->graph, 0);
  if (ei != cudaSuccess) {
    g->exec = nullptr;
    graph_destroy(ctx, g);
    fail_msg("graph_end", "(the stream)",
             fmt::format("instantiating the recorded step failed: {} ({})", cudaGetErrorString(ei),
                         cudaGetErrorName(ei)));
  }
  return g;
}

void graph_launch(void* ctx, void* p) {
  Context& cx = context(ctx);
  TB_CUDA_CHECK(cudaGraphLaunch(static_cast<Graph*>(p)->exec, cx.stream), "graph_launch",
                std::string("(the stream)"));
}

void destroy_context(void* p) {
  auto* cx = static_cast<Context*>(p);
  if (!cx) return;
  cudaSetDevice(cx->device);
  if (cx->stream) cudaStreamSynchronize(cx->stream);
  if (cx->dnn) cudnnDestroy(cx->dnn);
  if (cx->lt) cublaslt().Destroy(cx->lt);
  if (cx->workspace) cudaFree(cx->workspace);
  if (cx->bf16_scratch) cudaFree(cx->bf16_scratch);
  if (cx->params16) cudaFree(cx->params16);
  if (cx->bn_partials) cudaFree(cx->bn_partials);
  for (void* q : cx->retired) cudaFree(q);
  if (cx->stream) cudaStreamDestroy(cx->stream);
  (void)cudaGetLastError();
  delete cx;
}

}  // namespace

}  // namespace cuda

// ---- devices ----

int cuda_device_count() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

std::string cuda_unavailable_reason() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return fmt::format("cudaGetDeviceCount: {} ({})", cudaGetErrorString(e), cudaGetErrorName(e));
  }
  if (n == 0) return "cudaGetDeviceCount found no CUDA GPU";
  return "";
}

std::string cuda_version_str(int v) {
  return fmt::format("{}.{}", v / 1000, (v % 1000) / 10);
}
std::string cudnn_version_str(int64_t v) {
  // cuDNN 9: major * 10000 + minor * 100 + patch (cuDNN 8 used major * 1000 + minor * 100 + patch).
  if (v >= 90000) return fmt::format("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100);
  return fmt::format("{}.{}.{}", v / 1000, (v % 1000) / 100, v % 100);
}

std::string nccl_version_str(int64_t v) {
  if (v == 0) return "none";
  // NCCL 2.9 on: major * 10000 + minor * 100 + patch (before: major * 1000 + minor * 100 + patch).
  if (v >= 20900) return fmt::format("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100);
  return fmt::format("{}.{}.{}", v / 1000, (v % 1000) / 100, v % 100);
}

// NCCL is loaded, not linked (cmake/cuda_libs.cmake): by its soname where the loader finds it,
// else where the build found it. 0 where neither loads.
static int64_t nccl_version() {
#ifdef TRAINBENCH_HAVE_NCCL
  void* lib = dlopen("libnccl.so.2", RTLD_LAZY | RTLD_LOCAL);
  if (!lib) lib = dlopen(TRAINBENCH_NCCL_LIBRARY, RTLD_LAZY | RTLD_LOCAL);
  if (!lib) return 0;
  using GetVersion = ncclResult_t (*)(int*);
  auto get = reinterpret_cast<GetVersion>(dlsym(lib, "ncclGetVersion"));
  int v = 0;
  const bool ok = get && get(&v) == ncclSuccess;
  dlclose(lib);
  return ok ? v : 0;
#else
  return 0;
#endif
}

std::vector<CudaDeviceInfo> cuda_devices() {
  std::vector<CudaDeviceInfo> out;
  const int n = cuda_device_count();
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    CudaDeviceInfo d;
    d.index = i;
    d.name = p.name;
    d.total_memory_bytes = int64_t(p.totalGlobalMem);
    d.sm_count = p.multiProcessorCount;
    cudaDeviceGetAttribute(&d.sm_clock_khz, cudaDevAttrClockRate, i);
    cudaDeviceGetAttribute(&d.memory_clock_khz, cudaDevAttrMemoryClockRate, i);
    d.memory_bus_width_bits = p.memoryBusWidth;
    d.l2_cache_bytes = p.l2CacheSize;
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    d.driver_version = driver;
    d.runtime_version = runtime;
    d.cudnn_version = int64_t(cudnnGetVersion());
    d.cublas_version = cuda::cublaslt_version();
    d.nccl_version = nccl_version();
    char bus[32] = {0};
    if (cudaDeviceGetPCIBusId(bus, sizeof(bus), i) == cudaSuccess) d.pci_bus_id = bus;
    (void)cudaGetLastError();
    out.push_back(std::move(d));
  }
  return out;
}

std::unique_ptr<Backend> make_cuda_backend(const BackendConfig& cfg) {
  TB_CHECK(cfg.device == DeviceKind::cuda, "the CUDA backend runs on CUDA devices only");
  const int gpus = cuda_device_count();
  if (gpus == 0) fail("--device cuda: no CUDA GPU usable here: {}", cuda_unavailable_reason());
  TB_CHECK(cfg.device_index >= 0 && cfg.device_index < gpus,
           "--device cuda:{}: this machine has {} CUDA GPU(s)", cfg.device_index, gpus);

  auto b = std::make_unique<Backend>();
  auto* cx = new cuda::Context();
  b->ctx = cx;  // from here the Backend's destructor cleans up, also when a step below throws
  b->destroy = cuda::destroy_context;
  cx->device = cfg.device_index;
  cx->precision = cfg.precision;
  cx->deterministic = cfg.deterministic;
  cx->reuse_bf16 = cfg.reuse_bf16;
  cx->bf16_nhwc = cfg.cuda.bf16_nhwc;
  cx->bn_slices = cfg.cuda.bn_slices;
  const std::string dev = fmt::format("[device {}]", cfg.device_index);
  TB_CUDA_CHECK(cudaSetDevice(cx->device), "init", dev);
  cudaDeviceProp prop{};
  TB_CUDA_CHECK(cudaGetDeviceProperties(&prop, cx->device), "init", dev);
  cx->sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
  cx->device_name = fmt::format("cuda:{} ({})", cx->device, prop.name);
  if (cfg.precision != Precision::fp32 && prop.major < 8)
    fail("--precision {} on cuda: {} has compute capability {}.{}; {} needs 8.0 or newer",
         precision_name(cfg.precision), prop.name, prop.major, prop.minor,
         cfg.precision == Precision::tf32 ? "TF32" : "bf16 tensor-core math");
  TB_CUDA_CHECK(cudaStreamCreateWithFlags(&cx->stream, cudaStreamNonBlocking), "init", dev);
  TB_CUBLAS_CHECK(cuda::cublaslt().Create(&cx->lt), "init", dev);
  TB_CUDNN_CHECK(cudnnCreate(&cx->dnn), "init", dev);
  TB_CUDNN_CHECK(cudnnSetStream(cx->dnn, cx->stream), "init", dev);
  cx->workspace_bytes = size_t(64) << 20;
  {
    cudaError_t e = cudaMalloc(&cx->workspace, cx->workspace_bytes);
    if (e != cudaSuccess) {
      cx->workspace = nullptr;
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail(
          "cuda: out of GPU memory on {} allocating the 64 MiB library workspace: {:.1f} MiB free "
          "of {:.1f} MiB ({})",
          cx->device_name, free_b / 1048576.0, total_b / 1048576.0, cudaGetErrorString(e));
    }
  }

  {
    void* partials = nullptr;
    const size_t floats = cuda::bn_partials_for(cx->sm_count);
    TB_CUDA_CHECK(cudaMalloc(&partials, floats * sizeof(float)), "init (batch norm partials)", dev);
    cx->bn_partials = static_cast<float*>(partials);
  }

  b->name = "cuda";
  b->device = DeviceKind::cuda;
  b->precision = cfg.precision;
  b->alloc = cuda::alloc;
  b->free = cuda::free_;
  b->upload = cuda::upload;
  b->download = cuda::download;
  b->copy = cuda::copy;
  b->fill = cuda::fill;
  b->synchronize = cuda::synchronize;
  b->native_stream = [](void* ctx) -> void* { return cuda::context(ctx).stream; };
  b->set_param_array = cuda::set_param_array;
  if (cfg.graphs) {
    b->graph_begin = cuda::graph_begin;
    b->graph_end = cuda::graph_end;
    b->graph_launch = cuda::graph_launch;
    b->graph_destroy = cuda::graph_destroy;
  }
  cuda::register_elementwise(*b);
  cuda::register_dense(*b);
  cuda::register_conv2d(*b);
  cuda::register_batchnorm(*b);
  cuda::register_pool(*b);
  cuda::register_optimizers(*b);
  cuda::register_timers(*b);
  if (cfg.cuda.fused_mlp) cuda::register_mlp_step(*b);
  return b;
}

}  // namespace tb
