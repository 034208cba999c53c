// The reference backend: host memory and the plain loops of src/ops. Slow and obviously right;
// tests run whole models on it and compare every fast backend against it.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backends/backend.h"
#include "backends/host_memory.h"
#include "core/error.h"
#include "ops/add.h"
#include "ops/relu.h"
#include "ops/softmax_ce.h"

namespace tb {

namespace host_memory {
// MemAvailable from /proc/meminfo in bytes, 0 when it cannot be read.
static size_t available_bytes() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  unsigned long long kb = 0;
  while (std::fgets(line, sizeof(line), f))
    if (std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
  std::fclose(f);
  return size_t(kb) * 1024;
}

void* alloc(void*, size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  // Linux overcommits: a buffer larger than the memory there is may be handed out and the
  // process killed when the memset below touches it. Large requests are checked first.
  if (rounded >= (size_t(64) << 20)) {
    const size_t avail = available_bytes();
    if (avail && rounded > avail)
      throw OutOfMemory(
          fmt::format("out of host memory: asked for {:.1f} MiB, {:.1f} MiB available",
                      bytes / 1048576.0, avail / 1048576.0),
          bytes, avail);
  }
  void* p = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!p)
    throw OutOfMemory(fmt::format("out of host memory allocating {} bytes", bytes), bytes,
                      available_bytes());
  std::memset(p, 0, rounded);
  return p;
}
void free(void*, void* p) {
  std::free(p);
}
void copy(void*, void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
}
void fill(void*, float* dst, float value, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dst[i] = value;
}
void synchronize(void*) {}
}  // namespace host_memory

std::unique_ptr<Backend> make_reference_backend(const BackendConfig& cfg) {
  TB_CHECK(cfg.device == DeviceKind::cpu, "the reference backend runs on the CPU only");
  auto b = std::make_unique<Backend>();
  b->name = "reference";
  b->device = DeviceKind::cpu;
  b->precision = Precision::fp32;
  b->alloc = host_memory::alloc;
  b->free = host_memory::free;
  b->upload = host_memory::copy;
  b->download = host_memory::copy;
  b->copy = host_memory::copy;
  b->fill = host_memory::fill;
  b->synchronize = host_memory::synchronize;

  b->gather_batch = [](void*, const BatchSpec& s, const uint8_t* im, const uint8_t* lb,
                       const int32_t* idx, float* x,
                       int32_t* y) { ref::gather_batch(s, im, lb, idx, x, y); };
  b->dense_forward = [](void*, OpCache&, const DenseDims& d, const float* x, const float* w,
                        const float* bias, float* y, bool relu_after) {
    ref::dense_forward(d, x, w, bias, y);
    if (relu_after) ref::relu_forward(d.n * d.out, y, y);
  };
  b->dense_backward = [](void*, OpCache&, const DenseDims& d, const float* x, const float* w,
                         const float* dy, float* dx, float* dw,
                         float* db) { ref::dense_backward(d, x, w, dy, dx, dw, db); };
  b->relu_forward = [](void*, int64_t n, const float* x, float* y) { ref::relu_forward(n, x, y); };
  b->relu_backward = [](void*, int64_t n, const float* y, const float* dy, float* dx) {
    ref::relu_backward(n, y, dy, dx);
  };
  b->add = [](void*, int64_t n, const float* a, const float* x, float* y) {
    ref::add_forward(n, a, x, y);
  };
  b->softmax_ce = [](void*, int64_t n, int64_t k, const float* z, const int32_t* l, float s,
                     float* dz, float* m) { ref::softmax_ce(n, k, z, l, s, dz, m); };
  b->conv2d_forward = [](void*, OpCache&, const ConvDims& d, const float* x, const float* w,
                         float* y) { ref::conv2d_forward(d, x, w, y); };
  b->conv2d_backward_data = [](void*, OpCache&, const ConvDims& d, const float* dy, const float* w,
                               float* dx) { ref::conv2d_backward_data(d, dy, w, dx); };
  b->conv2d_backward_weights = [](void*, OpCache&, const ConvDims& d, const float* x,
                                  const float* dy,
                                  float* dw) { ref::conv2d_backward_weights(d, x, dy, dw); };
  b->batchnorm_forward_train = [](void*, OpCache&, const BnDims& d, const BnParams& p,
                                  const float* x, const float* g, const float* be, float* y,
                                  float* sm, float* si, float* rm, float* rv) {
    ref::batchnorm_forward_train(d, p, x, g, be, y, sm, si, rm, rv);
  };
  b->batchnorm_forward_eval = [](void*, OpCache&, const BnDims& d, const BnParams& p,
                                 const float* x, const float* g, const float* be, const float* rm,
                                 const float* rv, float* y) {
    ref::batchnorm_forward_eval(d, p, x, g, be, rm, rv, y);
  };
  b->batchnorm_backward = [](void*, OpCache&, const BnDims& d, const float* x, const float* dy,
                             const float* g, const float* sm, const float* si, float* dx, float* dg,
                             float* db) {
    ref::batchnorm_backward(d, x, dy, g, sm, si, dx, dg, db);
  };
  b->maxpool_forward = [](void*, OpCache&, const PoolDims& d, const float* x, float* y,
                          int32_t* am) { ref::maxpool_forward(d, x, y, am); };
  b->maxpool_backward = [](void*, OpCache&, const PoolDims& d, const float* dy, const int32_t* am,
                           float* dx) { ref::maxpool_backward(d, dy, am, dx); };
  b->global_avgpool_forward = [](void*, int64_t n, int64_t c, int64_t hw, Layout l, const float* x,
                                 float* y) {
    TB_CHECK(l == Layout::nchw, "the reference ops take NCHW activations only");
    ref::global_avgpool_forward(n, c, hw, x, y);
  };
  b->global_avgpool_backward = [](void*, int64_t n, int64_t c, int64_t hw, Layout l,
                                  const float* dy, float* dx) {
    TB_CHECK(l == Layout::nchw, "the reference ops take NCHW activations only");
    ref::global_avgpool_backward(n, c, hw, dy, dx);
  };
  b->adam_update = [](void*, int64_t n, float* p, const float* g, float* m, float* v,
                      const AdamParams& hp, const StepCursor* at) {
    ref::adam_update(n, p, g, m, v, hp, at->updates + 1);
  };
  b->sgd_update = [](void*, int64_t n, float* p, const float* g, float* buf, const SgdParams& hp) {
    ref::sgd_update(n, p, g, buf, hp);
  };
  b->advance_cursor = [](void*, StepCursor* c) { advance(*c); };
  return b;
}

}  // namespace tb
