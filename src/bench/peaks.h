// Peak FLOP/s of a device, for MFU. Three kinds, never mixed up (Peak::source says which):
//   - datasheet: a table of known GPUs (llm.c mfu.h's idea), dense (non-sparse) numbers only,
//     each with where it comes from; a GPU not in the table is unknown (nullopt), not a guess.
//   - estimate: for CPUs, cores x vector lanes x FMA units x 2 x clock from CpuInfo. Stated
//     assumptions, not a vendor number.
//   - measured: the best rate of a large oneDNN matrix product on this machine.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench/machine.h"
#include "core/dtype.h"

namespace tb {

struct Peak {
  double flops_per_s = 0;
  // "datasheet: H100 SXM5 bf16 dense (NVIDIA H100 whitepaper ...)",
  // "estimate: 2 cores x 8 fp32 lanes x 2 FMA units x 2 FLOP x 3.50 GHz ...",
  // "measured: oneDNN matmul f32 2048^3, 2 threads, best of 5 (gemm:jit)"
  std::string source;
};

// ---- GPUs: the datasheet table ----

// One row. Tensor-core columns are with fp32 accumulation (what training uses); nullopt where the
// device has no such mode (Turing has no tf32/bf16, Apple GPUs have no tensor cores).
struct GpuPeaks {
  std::string name;            // the row, "H100 SXM5"
  std::optional<double> fp32;  // SIMT fp32, no tensor cores
  std::optional<double> tf32, bf16, fp16;
  std::string source;
};

// Finds the row for a device name as the driver reports it ("NVIDIA H100 80GB HBM3" is the SXM5
// part, "NVIDIA H100 PCIe", "NVIDIA GeForce RTX 3090", "Apple M1 Max"). Case-insensitive
// whole-word matching, so "NVIDIA GH200" is not an H200 and "RTX 3060 Ti" is not an RTX 3060.
std::optional<GpuPeaks> gpu_peaks(std::string_view device_name);
// The peak for the precision a run uses (fp32 -> SIMT fp32, tf32/bf16 -> tensor cores).
std::optional<Peak> gpu_peak(std::string_view device_name, Precision p);
std::vector<GpuPeaks> gpu_peak_table();

// ---- CPUs ----

// cores x lanes x FMA units x 2 x clock, for the cores the run may use (threads <= 0: all usable).
// nullopt when the clock or the vector unit is unknown (non-x86), or for bf16 on a CPU without
// bf16 arithmetic (oneDNN converts to fp32 there; the fp32 peak is the ceiling). tf32 runs as
// fp32 on CPUs, so it gets the fp32 figure.
std::optional<Peak> cpu_peak_estimate(const CpuInfo& cpu, Precision p, int threads = 0);

struct GemmMeasurement {
  double flops_per_s = 0;  // best of the timed runs; 0 when oneDNN has no matmul for p here
  int64_t n = 0;           // M = N = K
  int runs = 0;            // timed runs
  int threads = 0;
  std::string impl;    // oneDNN's implementation: "gemm:jit", "brg:avx512_core_amx"
  bool native = true;  // false: bf16 on a CPU without bf16 arithmetic (oneDNN emulates it)
  std::string source;  // "measured: oneDNN matmul f32 2048^3, 2 threads, best of 5 (gemm:jit)"
};

// Times an n x n x n oneDNN matmul (f32, or bf16 inputs with f32 output), growing n from 256
// while a run fits in a fifth of the budget (at most 4096), then best of the runs that fit in
// the rest. Sets OpenMP's thread count for the measurement and restores it afterwards.
// threads <= 0: all usable CPUs.
GemmMeasurement measure_cpu_gemm(Precision p, int threads, double seconds_budget);
// The measured rate, or 0 when p cannot run natively here (bf16 without AVX512_BF16/AMX-BF16;
// measure_cpu_gemm still measures such emulation and says so).
double measure_cpu_gemm_flops(Precision p, int threads, double seconds_budget);

// ---- memory bandwidth (the roofline's other roof) ----
// GPU bandwidth from a small datasheet table (nullopt when unknown); CPU bandwidth measured with a
// parallel memcpy of two 64 MiB buffers (read + write counted).
std::optional<double> gpu_memory_bandwidth(std::string_view device_name, std::string* source);
double measure_memory_bandwidth(int threads, double seconds_budget, std::string* source);

}  // namespace tb
