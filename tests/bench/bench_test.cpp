// Measurements that print numbers worth reading (and bound the cost of measuring).
#include <gtest/gtest.h>

#include "bench/backend_gemm.h"

#include <chrono>
#include <cstdio>
#include <thread>

#include "bench/machine.h"
#include "bench/peaks.h"
#include "bench/sampler.h"

namespace tb {
namespace {

using namespace std::chrono_literals;

// One sample must cost well under 1% of a 100 ms period.
TEST(Bench, SamplerOverheadPerSample) {
  Sampler s({.rate_hz = 50, .gpu_index = 0});
  std::this_thread::sleep_for(500ms);
  s.stop();
  const SampleCost c = s.cost();
  ASSERT_GE(c.count, 10);
  std::printf("[bench] sampler: %lld samples, %.1f us mean, %.1f us max per sample (gpu: %s)\n",
              static_cast<long long>(c.count), c.mean_s * 1e6, c.max_s * 1e6,
              s.has_gpu() ? "yes" : "no");
  EXPECT_LT(c.mean_s, 1e-3);
}

TEST(Bench, MeasuredGemmAgainstEstimate) {
  const auto t0 = std::chrono::steady_clock::now();
  const CpuInfo cpu = cpu_info();
  const int threads = std::min(2, cpu.usable_cpus);
  const GemmMeasurement f32 = measure_cpu_gemm(Precision::fp32, threads, 1.5);
  const GemmMeasurement bf16 = measure_cpu_gemm(Precision::bf16, threads, 0.6);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const auto est = cpu_peak_estimate(cpu, Precision::fp32, threads);
  std::printf("[bench] cpu: %s, isa %s, %d usable / %d cores, %.0f MHz (%s)\n", cpu.model.c_str(),
              cpu.isa.c_str(), cpu.usable_cpus, cpu.physical_cores, cpu.max_mhz,
              cpu.mhz_source.c_str());
  std::printf("[bench] %.1f GFLOP/s  %s\n", f32.flops_per_s / 1e9, f32.source.c_str());
  if (est) {
    std::printf("[bench] %.1f GFLOP/s  %s -> measured/estimate %.2f\n", est->flops_per_s / 1e9,
                est->source.c_str(), f32.flops_per_s / est->flops_per_s);
  }
  std::printf("[bench] %.1f GFLOP/s  %s\n", bf16.flops_per_s / 1e9, bf16.source.c_str());
  std::printf("[bench] both measurements took %.2f s\n", seconds);

  EXPECT_GT(f32.flops_per_s, 1e9);
  EXPECT_GE(f32.n, 512);
  EXPECT_GE(f32.runs, 3);
  EXPECT_EQ(f32.source.rfind("measured: ", 0), 0u);
  if (!bf16.native) {
    EXPECT_EQ(measure_cpu_gemm_flops(Precision::bf16, threads, 0.5), 0.0);
  }
  EXPECT_LT(seconds, 3.0);
  // A measured product cannot beat the hardware by much; the estimate may be low when the
  // clock is the nominal one (VMs), so allow turbo headroom.
  if (est) {
    EXPECT_LT(f32.flops_per_s, 1.6 * est->flops_per_s);
  }
}

}  // namespace
}  // namespace tb

namespace tb {
// The backend-generic GEMM peak: on the oneDNN backend it must land near oneDNN's own matmul
// measurement (same library underneath), and never above the CPU's datasheet estimate x 1.5.
TEST(Bench, BackendGemmOnCpu) {
  auto be = make_backend({DeviceKind::cpu, 0, Precision::fp32, 0, false});
  const GemmMeasurement g = measure_backend_gemm(*be, 512, 0.3);
  EXPECT_GT(g.runs, 0);
  EXPECT_GT(g.flops_per_s, 1e8);
  // The estimate takes the nominal clock a VM reports; turbo beats it, by 1.5x on a 2-vCPU Zen 5
  // (2.6 GHz nominal, 500 GFLOP/s measured against 333). A miscounted product lands further out.
  if (auto est = cpu_peak_estimate(cpu_info(), Precision::fp32)) {
    EXPECT_LT(g.flops_per_s, 2.0 * est->flops_per_s);
  }
  EXPECT_NE(g.source.find("cpu-onednn"), std::string::npos);
}
}  // namespace tb
