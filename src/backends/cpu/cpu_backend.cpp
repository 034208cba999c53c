// The oneDNN CPU backend. Starts from the reference table (so an op without a fast path still
// runs, correctly and slowly), then each op file replaces the entries it accelerates.
#include <omp.h>
#include <sched.h>

#include "backends/cpu/cpu_context.h"
#include "backends/host_memory.h"
#include "core/error.h"

namespace tb {

int cpu_threads_available() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return omp_get_num_procs();
}

std::unique_ptr<Backend> make_cpu_backend(const BackendConfig& cfg) {
  TB_CHECK(cfg.device == DeviceKind::cpu, "the oneDNN backend runs on the CPU only");
  TB_CHECK(cfg.precision != Precision::tf32, "--precision tf32 is a GPU mode; use fp32 on the CPU");
  // Every CPU op computes in fp32 today; accepting bf16 would put a false label on the record.
  TB_CHECK(cfg.precision != Precision::bf16,
           "--precision bf16 on the CPU: not implemented yet (the oneDNN backend computes fp32)");
  auto b = make_reference_backend(BackendConfig{});
  auto* cx = new cpu::Context();
  cx->threads = cfg.threads > 0 ? cfg.threads : cpu_threads_available();
  cx->precision = cfg.precision;
  cx->deterministic = cfg.deterministic;
  // oneDNN and our loops share OpenMP's pool; set its size once for the run.
  omp_set_num_threads(cx->threads);
  b->name = "cpu-onednn";
  b->precision = cfg.precision;
  b->ctx = cx;
  b->destroy = [](void* p) { delete static_cast<cpu::Context*>(p); };
  cpu::register_dense(*b);
  cpu::register_elementwise(*b);
  cpu::register_optimizers(*b);
  cpu::register_conv2d(*b);
  cpu::register_batchnorm(*b);
  cpu::register_pool(*b);
  return b;
}

}  // namespace tb
