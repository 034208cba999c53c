#include "bench/device_facts.h"

#include <fmt/format.h>

#include "bench/backend_gemm.h"
#include "bench/machine.h"
#include "bench/peaks.h"
#ifdef TRAINBENCH_HAVE_CUDA
#include "backends/cuda/cuda_info.h"
#endif
#ifdef TRAINBENCH_HAVE_VULKAN
#include "backends/vulkan/vulkan_info.h"
#endif

namespace tb {

namespace {

DeviceFacts cpu_facts(Precision p, int threads, const FactsWanted& wanted) {
  const CpuInfo cpu = cpu_info();
  DeviceFacts f;
  f.kind = "cpu", f.name = cpu.model, f.extra = to_json(cpu);
  if (auto peak = cpu_peak_estimate(cpu, p, threads))
    f.peak_datasheet = peak->flops_per_s, f.peak_datasheet_source = peak->source;
  if (wanted.measured_peak) {
    const GemmMeasurement g = measure_cpu_gemm(p, threads, 1.0);
    if (g.flops_per_s > 0 && g.native)
      f.peak_measured = g.flops_per_s, f.peak_measured_source = g.source;
  }
  if (wanted.bandwidth) f.bandwidth = measure_memory_bandwidth(threads, 0.2, &f.bandwidth_source);
  return f;
}

#ifdef TRAINBENCH_HAVE_CUDA
DeviceFacts cuda_facts(int index, Precision p, Backend& be, const FactsWanted& wanted) {
  const CudaDeviceInfo gpu = cuda_devices().at(size_t(index));
  DeviceFacts f;
  f.kind = "cuda", f.name = gpu.name;
  f.extra = {{"index", gpu.index},
             {"memory_bytes", gpu.total_memory_bytes},
             {"sms", gpu.sm_count},
             {"compute_capability", gpu.compute_capability()},
             {"driver", cuda_version_str(gpu.driver_version)},
             {"runtime", cuda_version_str(gpu.runtime_version)},
             {"cudnn", cudnn_version_str(gpu.cudnn_version)},
             {"nccl", nccl_version_str(gpu.nccl_version)}};
  if (auto peak = gpu_peak(gpu.name, p))
    f.peak_datasheet = peak->flops_per_s, f.peak_datasheet_source = peak->source;
  if (p == Precision::bf16)  // layers bf16's kernels refuse run in tf32 (OpCache::precision)
    if (auto peak = gpu_peak(gpu.name, Precision::tf32))
      f.other_peaks[Precision::tf32] = peak->flops_per_s;
  if (wanted.measured_peak) {
    const GemmMeasurement g = measure_backend_gemm(be, 8192, 1.0);
    f.peak_measured = g.flops_per_s, f.peak_measured_source = g.source;
  }
  if (wanted.bandwidth) {
    f.bandwidth = gpu_memory_bandwidth(gpu.name, &f.bandwidth_source);
    if (!f.bandwidth && gpu.memory_clock_khz > 0 && gpu.memory_bus_width_bits > 0) {
      // Double data rate: two transfers per memory clock over the whole bus.
      f.bandwidth = 2.0 * gpu.memory_clock_khz * 1e3 * gpu.memory_bus_width_bits / 8.0;
      f.bandwidth_source = "derived: 2 x memory clock x bus width (CUDA device properties)";
    }
  }
  return f;
}

std::string cuda_devices_text(bool measure) {
  std::string out;
  for (const CudaDeviceInfo& g : cuda_devices()) {
    out += fmt::format(
        "GPU {}: {}, {:.1f} GiB, {} SMs, SM clock {} MHz, compute capability {}, driver {}, "
        "runtime {}, cuDNN {}, NCCL {}\n",
        g.index, g.name, g.total_memory_bytes / double(1 << 30), g.sm_count, g.sm_clock_khz / 1000,
        g.compute_capability(), cuda_version_str(g.driver_version),
        cuda_version_str(g.runtime_version), cudnn_version_str(g.cudnn_version),
        nccl_version_str(g.nccl_version));
    for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16}) {
      auto pk = gpu_peak(g.name, p);
      out += fmt::format("  {} peak: {}\n", precision_name(p),
                         pk ? fmt::format("{:.1f} TFLOP/s ({})", pk->flops_per_s / 1e12, pk->source)
                            : std::string("unknown (not in the device table)"));
      if (!measure) continue;
      BackendConfig cfg;
      cfg.device = DeviceKind::cuda, cfg.device_index = g.index, cfg.precision = p;
      auto be = make_backend(cfg);
      const GemmMeasurement m = measure_backend_gemm(*be, 8192, 1.0);
      out += fmt::format("  {} measured: {:.1f} TFLOP/s ({})\n", precision_name(p),
                         m.flops_per_s / 1e12, m.source);
    }
  }
  if (cuda_devices().empty()) out += fmt::format("GPU: none ({})\n", cuda_unavailable_reason());
  return out;
}
#endif

#ifdef TRAINBENCH_HAVE_VULKAN
DeviceFacts vulkan_facts(int index, Backend& be, const FactsWanted& wanted) {
  const VulkanDeviceInfo gpu = vulkan_devices().at(size_t(index));
  DeviceFacts f;
  f.kind = "vulkan", f.name = gpu.name;
  f.extra = {{"index", gpu.index},
             {"type", gpu.type},
             {"driver", gpu.driver},
             {"api", gpu.api_version},
             {"memory_bytes", gpu.memory_bytes},
             {"unified_memory", gpu.unified},
             {"subgroup_size", gpu.subgroup_size}};
  if (auto p = vulkan_fp32_peak(gpu.name))
    f.peak_datasheet = p->flops_per_s, f.peak_datasheet_source = p->source;
  if (wanted.measured_peak) {  // a CPU driver (lavapipe) runs 4096^3 in minutes, not seconds
    const GemmMeasurement g = measure_backend_gemm(be, gpu.type == "cpu" ? 512 : 4096, 1.0);
    f.peak_measured = g.flops_per_s, f.peak_measured_source = g.source;
  }
  return f;
}

std::string vulkan_devices_text() {
  std::string out;
  for (const VulkanDeviceInfo& v : vulkan_devices()) {
    const auto pk = vulkan_fp32_peak(v.name);
    out += fmt::format(
        "Vulkan {}: {} ({}), driver {}, API {}, {:.1f} GiB{}, subgroup {}, fp16 {}, cooperative "
        "matrix {}, fp32 peak {}{}\n",
        v.index, v.name, v.type, v.driver, v.api_version, v.memory_bytes / double(1 << 30),
        v.unified ? " unified" : "", v.subgroup_size, v.fp16 ? "yes" : "no",
        v.cooperative_matrix ? "yes" : "no",
        pk ? fmt::format("{:.1f} TFLOP/s ({})", pk->flops_per_s / 1e12, pk->source) : "unknown",
        v.usable ? "" : "; not usable: lacks " + v.why_not);
  }
  return out;
}
#endif

}  // namespace

DeviceFacts device_facts(const BackendConfig& cfg, Backend& be, int threads,
                         const FactsWanted& wanted) {
  switch (cfg.device) {
    case DeviceKind::cpu:
      return cpu_facts(cfg.precision, threads, wanted);
    case DeviceKind::cuda:
#ifdef TRAINBENCH_HAVE_CUDA
      return cuda_facts(cfg.device_index, cfg.precision, be, wanted);
#else
      break;
#endif
    case DeviceKind::vulkan:
#ifdef TRAINBENCH_HAVE_VULKAN
      return vulkan_facts(cfg.device_index, be, wanted);
#else
      break;
#endif
  }
  DeviceFacts f;  // a kind this binary has no facts for: its name only
  f.kind = device_kind_name(cfg.device), f.name = be.name;
  return f;
}

std::string devices_text(bool measure) {
  const CpuInfo cpu = cpu_info();
  std::string out = fmt::format(
      "CPU: {} ({} usable of {} logical CPUs, {} physical cores), oneDNN ISA {}, max {:.0f} "
      "MHz\n",
      cpu.model, cpu.usable_cpus, cpu.logical_cpus, cpu.physical_cores, cpu.isa, cpu.max_mhz);
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    auto est = cpu_peak_estimate(cpu, p);
    out += fmt::format("  {} peak: {}\n", precision_name(p),
                       est ? fmt::format("{:.1f} GFLOP/s ({})", est->flops_per_s / 1e9, est->source)
                           : std::string("unknown (no native support)"));
    if (measure) {
      GemmMeasurement g = measure_cpu_gemm(p, 0, 1.0);
      out += fmt::format("  {} measured: {:.1f} GFLOP/s ({}{})\n", precision_name(p),
                         g.flops_per_s / 1e9, g.source, g.native ? "" : "; emulated, not native");
    }
  }
#ifdef TRAINBENCH_HAVE_CUDA
  out += cuda_devices_text(measure);
#else
  out += "GPU: CUDA backend not built in\n";
#endif
#ifdef TRAINBENCH_HAVE_VULKAN
  out += vulkan_devices_text();
#endif
  for (const BackendInfo& b : list_backends())
    out += fmt::format("backend {:<12} {:<5} built: {:<3} usable: {:<3} {}\n", b.name,
                       device_kind_name(b.device), b.built ? "yes" : "no", b.usable ? "yes" : "no",
                       b.why_not);
  return out;
}

}  // namespace tb
