#include "bench/peaks.h"

#include <gtest/gtest.h>

namespace tb {
namespace {

TEST(Peak, H100SxmBf16Dense) {
  auto p = gpu_peak("NVIDIA H100 80GB HBM3", Precision::bf16);
  ASSERT_TRUE(p.has_value());
  EXPECT_NEAR(p->flops_per_s, 989.4e12, 989.4e12 * 0.01);
  EXPECT_NE(p->source.find("datasheet"), std::string::npos) << p->source;
  EXPECT_NE(p->source.find("H100 SXM5"), std::string::npos) << p->source;
  EXPECT_NEAR(gpu_peak("NVIDIA H100 80GB HBM3", Precision::tf32)->flops_per_s, 494.7e12, 1e12);
  EXPECT_NEAR(gpu_peak("NVIDIA H100 80GB HBM3", Precision::fp32)->flops_per_s, 66.9e12, 1e11);
}

TEST(Peak, UnknownGpuIsNullopt) {
  EXPECT_FALSE(gpu_peaks("NVIDIA Frobnicator 9000").has_value());
  EXPECT_FALSE(gpu_peak("", Precision::fp32).has_value());
  EXPECT_FALSE(gpu_peak("NVIDIA H100", Precision::bf16).has_value());  // which H100? don't guess
}

// Names as drivers report them, each to its own row (and look-alikes to none).
TEST(Peak, NameMatching) {
  auto row = [](const char* name) {
    auto r = gpu_peaks(name);
    return r ? r->name : std::string("unknown");
  };
  EXPECT_EQ(row("NVIDIA H100 80GB HBM3"), "H100 SXM5");
  EXPECT_EQ(row("NVIDIA H100 PCIe"), "H100 PCIe");
  EXPECT_EQ(row("NVIDIA H100 NVL"), "H100 NVL");
  EXPECT_EQ(row("NVIDIA H200"), "H200 SXM");
  EXPECT_EQ(row("NVIDIA H200 NVL"), "H200 NVL");
  EXPECT_EQ(row("NVIDIA GH200 480GB"), "unknown");
  EXPECT_EQ(row("NVIDIA A100-SXM4-80GB"), "A100 SXM");
  EXPECT_EQ(row("NVIDIA A100-PCIE-40GB"), "A100 PCIe");
  EXPECT_EQ(row("NVIDIA A100 80GB PCIe"), "A100 PCIe");
  EXPECT_EQ(row("NVIDIA GeForce RTX 2080 Ti"), "RTX 2080 Ti");
  EXPECT_EQ(row("GeForce RTX 2080 Ti"), "RTX 2080 Ti");
  EXPECT_EQ(row("NVIDIA GeForce RTX 3060"), "RTX 3060");
  EXPECT_EQ(row("NVIDIA GeForce RTX 3060 Ti"), "unknown");
  EXPECT_EQ(row("NVIDIA GeForce RTX 3060 Laptop GPU"), "unknown");
  EXPECT_EQ(row("NVIDIA GeForce RTX 3090"), "RTX 3090");
  EXPECT_EQ(row("NVIDIA GeForce RTX 3090 Ti"), "unknown");
  EXPECT_EQ(row("NVIDIA GeForce RTX 4090"), "RTX 4090");
  EXPECT_EQ(row("NVIDIA GeForce RTX 4090 D"), "unknown");
  EXPECT_EQ(row("NVIDIA L4"), "L4");
  EXPECT_EQ(row("NVIDIA L40S"), "L40S");
  EXPECT_EQ(row("NVIDIA L40"), "unknown");
  EXPECT_EQ(row("Apple M1"), "Apple M1 GPU (8-core)");
  EXPECT_EQ(row("Apple M1 Pro"), "Apple M1 Pro GPU (16-core)");
  EXPECT_EQ(row("Apple M1 Max"), "Apple M1 Max GPU (32-core)");
  EXPECT_EQ(row("Apple M1 Ultra"), "unknown");
  EXPECT_EQ(row("Apple M2"), "unknown");
}

TEST(Peak, PrecisionsADeviceLacksAreNullopt) {
  EXPECT_FALSE(gpu_peak("NVIDIA GeForce RTX 2080 Ti", Precision::bf16).has_value());  // Turing
  EXPECT_FALSE(gpu_peak("NVIDIA GeForce RTX 2080 Ti", Precision::tf32).has_value());
  EXPECT_NEAR(gpu_peak("NVIDIA GeForce RTX 2080 Ti", Precision::fp32)->flops_per_s, 13.4e12, 1e11);
  EXPECT_FALSE(gpu_peak("Apple M1 Max", Precision::bf16).has_value());
  EXPECT_NEAR(gpu_peak("Apple M1", Precision::fp32)->flops_per_s, 2.6e12, 1e9);
  EXPECT_NEAR(gpu_peak("Apple M1 Pro", Precision::fp32)->flops_per_s, 5.2e12, 1e9);
  EXPECT_NEAR(gpu_peak("Apple M1 Max", Precision::fp32)->flops_per_s, 10.4e12, 1e9);
}

TEST(Peak, TableRowsAreSourcedAndSane) {
  const auto table = gpu_peak_table();
  EXPECT_GE(table.size(), 15u);
  for (const GpuPeaks& g : table) {
    EXPECT_FALSE(g.source.empty()) << g.name;
    ASSERT_TRUE(g.fp32.has_value()) << g.name;
    // Tensor rates, where present, are at least the SIMT rate and bf16 >= tf32.
    if (g.tf32) {
      EXPECT_GE(*g.tf32, *g.fp32) << g.name;
    }
    if (g.bf16 && g.tf32) {
      EXPECT_GE(*g.bf16, *g.tf32) << g.name;
    }
  }
}

CpuInfo fake_cpu() {
  CpuInfo c;
  c.model = "test";
  c.vendor = "GenuineIntel";
  c.family = 6;
  c.usable_cpus = c.logical_cpus = 4;
  c.physical_cores = 2;  // 2 cores x 2 SMT threads
  c.avx2 = c.fma = true;
  c.max_mhz = 3500;
  c.mhz_source = "test";
  return c;
}

TEST(Peak, CpuEstimateAvx2) {
  const CpuInfo c = fake_cpu();
  auto p = cpu_peak_estimate(c, Precision::fp32);
  ASSERT_TRUE(p.has_value());
  // 2 physical cores (SMT adds no FMA units) x 8 lanes x 2 FMA x 2 x 3.5 GHz.
  EXPECT_DOUBLE_EQ(p->flops_per_s, 2 * 8 * 2 * 2 * 3.5e9);
  EXPECT_EQ(p->source.rfind("estimate: ", 0), 0u) << p->source;
  EXPECT_DOUBLE_EQ(cpu_peak_estimate(c, Precision::fp32, 1)->flops_per_s, 8 * 2 * 2 * 3.5e9);
  EXPECT_DOUBLE_EQ(cpu_peak_estimate(c, Precision::tf32)->flops_per_s, p->flops_per_s);
  EXPECT_FALSE(cpu_peak_estimate(c, Precision::bf16).has_value());  // no bf16 arithmetic
}

TEST(Peak, CpuEstimateAvx512AndBf16) {
  CpuInfo c = fake_cpu();
  c.avx512f = c.avx512_bf16 = true;
  EXPECT_DOUBLE_EQ(cpu_peak_estimate(c, Precision::fp32)->flops_per_s, 2 * 16 * 2 * 2 * 3.5e9);
  EXPECT_DOUBLE_EQ(cpu_peak_estimate(c, Precision::bf16)->flops_per_s, 2 * 128 * 3.5e9);
  c.amx_bf16 = true;
  EXPECT_DOUBLE_EQ(cpu_peak_estimate(c, Precision::bf16)->flops_per_s, 2 * 1024 * 3.5e9);
  // Zen 4: AVX-512 on 256-bit pipes, same rate as AVX2.
  CpuInfo z = fake_cpu();
  z.vendor = "AuthenticAMD";
  z.family = 0x19;
  z.avx512f = true;
  EXPECT_DOUBLE_EQ(cpu_peak_estimate(z, Precision::fp32)->flops_per_s, 2 * 8 * 2 * 2 * 3.5e9);
}

TEST(Peak, CpuEstimateUnknownClockIsNullopt) {
  CpuInfo c = fake_cpu();
  c.max_mhz = 0;
  EXPECT_FALSE(cpu_peak_estimate(c, Precision::fp32).has_value());
  CpuInfo arm;
  arm.max_mhz = 3000;
  EXPECT_FALSE(cpu_peak_estimate(arm, Precision::fp32).has_value());
}

}  // namespace
}  // namespace tb
