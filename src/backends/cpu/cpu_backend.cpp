// The oneDNN CPU backend. Starts from the reference table (so an op without a fast path still
// runs, correctly and slowly), then each op file replaces the entries it accelerates.
#include <omp.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <sched.h>

#include <algorithm>
#include <string>

#include "backends/cpu/cpu_context.h"
#include "backends/host_memory.h"
#include "core/error.h"

namespace tb {

namespace cpu {

bool cpu_has_bf16_kernels() {
  const auto bf16 = unsigned(dnnl_cpu_isa_avx512_core_bf16);  // ISA values are nested bit masks
  return (unsigned(dnnl_get_effective_cpu_isa()) & bf16) == bf16;
}

std::string onednn_isa() {
  std::string s = dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa());
  if (s.rfind("cpu_isa_", 0) == 0) s = s.substr(8);
  return s;
}

void convert_to_bf16(const float* src, uint16_t* dst, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void Context::refresh_mirror(const void* dst, size_t bytes) {
  if (params16.empty()) return;
  const uintptr_t lo = std::max(uintptr_t(dst), uintptr_t(params));
  const uintptr_t hi = std::min(uintptr_t(dst) + bytes, uintptr_t(params + param_count));
  if (lo >= hi) return;
  // Whole floats only: a write that ends or starts inside one still changed it.
  const size_t first = (lo - uintptr_t(params)) / sizeof(float);
  const size_t last = (hi - uintptr_t(params) + sizeof(float) - 1) / sizeof(float);
  convert_to_bf16(params + first, params16.data() + first, int64_t(last - first));
}

const uint16_t* Context::to_bf16(int slot, const float* src, size_t count) {
  std::vector<uint16_t>& buf = bf16_buf[slot];
  bf16_left[slot] = {};
  if (buf.size() < count) buf.resize(count);
  convert_to_bf16(src, buf.data(), int64_t(count));
  return buf.data();
}

}  // namespace cpu

int cpu_threads_available() {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
#endif
  return omp_get_num_procs();
}

std::unique_ptr<Backend> make_cpu_backend(const BackendConfig& cfg) {
  TB_CHECK(cfg.device == DeviceKind::cpu, "the oneDNN backend runs on the CPU only");
  TB_CHECK(cfg.precision != Precision::tf32, "--precision tf32 is a GPU mode; use fp32 on the CPU");
  // Without bf16 instructions oneDNN would emulate bf16, slower than fp32: a label, not a mode.
  if (cfg.precision == Precision::bf16 && !cpu::cpu_has_bf16_kernels()) {
    fail(
        "--precision bf16 on the CPU needs AVX512-BF16 or AMX-BF16 (oneDNN runs {} here); use fp32",
        cpu::onednn_isa());
  }
  auto b = make_reference_backend(BackendConfig{});
  auto* cx = new cpu::Context();
  cx->threads = cfg.threads > 0 ? cfg.threads : cpu_threads_available();
  cx->precision = cfg.precision;
  cx->deterministic = cfg.deterministic;
  cx->reuse_bf16 = cfg.reuse_bf16;
  // oneDNN and our loops share OpenMP's pool; set its size once for the run.
  omp_set_num_threads(cx->threads);
  b->name = "cpu-onednn";
  b->precision = cfg.precision;
  b->nhwc = cfg.cpu_nhwc;
  // Batch norm's dx in the bf16 its convolution would convert it to (conv2d.cpp, batchnorm.cpp).
  b->bf16_conv_grads = cx->bf16() && cfg.reuse_bf16 && cfg.cpu_nhwc;
  b->bf16_maps = cx->bf16() && cfg.cpu_nhwc && cfg.bf16_maps;
  b->ctx = cx;
  b->destroy = [](void* p) { delete static_cast<cpu::Context*>(p); };
  if (cx->bf16() && cfg.reuse_bf16) {
    // Writes into the parameter array refresh its bf16 mirror (the optimizers keep it themselves).
    b->upload = [](void* ctx, void* dst, const void* src, size_t bytes) {
      host_memory::copy(ctx, dst, src, bytes);
      cpu::context(ctx).refresh_mirror(dst, bytes);
    };
    b->copy = b->upload;
    b->fill = [](void* ctx, float* dst, float value, int64_t count) {
      host_memory::fill(ctx, dst, value, count);
      cpu::context(ctx).refresh_mirror(dst, size_t(count) * sizeof(float));
    };
    b->set_param_array = [](void* ctx, const float* params, int64_t count) {
      cpu::Context& cx = cpu::context(ctx);
      if (count == 0) {
        if (params == cx.params) cx.params = nullptr, cx.param_count = 0, cx.params16.clear();
        return;
      }
      cx.params = params, cx.param_count = size_t(count);
      cx.params16.assign(size_t(count), 0);
      cx.refresh_mirror(params, size_t(count) * sizeof(float));
    };
  }
  cpu::register_dense(*b);
  cpu::register_elementwise(*b);
  cpu::register_optimizers(*b);
  cpu::register_conv2d(*b);
  cpu::register_batchnorm(*b);
  cpu::register_pool(*b);
  if (!cx->bf16() && cfg.cpu_fused_mlp) cpu::register_mlp_step(*b);
  return b;
}

}  // namespace tb
