#include "bench/peaks.h"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstring>
#include <dnnl.hpp>

namespace tb {

// ---------------------------------------------------------------------------------------------
// GPU datasheet table. FLOP/s, dense. Whitepaper numbers are at the boost clock of the
// reference board; datasheet numbers marked "sparse" there are halved here.

namespace {

constexpr double T = 1e12;

struct GpuRow {
  // Whole-word, case-insensitive: `key` must appear as a word, plus one of the '|'-separated
  // `also` words (if any), and none of the `unless` words.
  const char* key;
  const char* also;
  const char* unless;
  const char* name;
  std::optional<double> fp32, tf32, bf16, fp16;
  const char* source;
};

const std::array<GpuRow, 16> kGpus = {{
    // Hopper. NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022): SXM5 132 SMs at
    // 1830 MHz, PCIe 114 SMs at 1755 MHz. The SXM5 part calls itself "H100 80GB HBM3".
    {"h100", "hbm3|sxm", "pcie|nvl", "H100 SXM5", 66.9 * T, 494.7 * T, 989.4 * T, 989.4 * T,
     "NVIDIA H100 whitepaper, SXM5"},
    {"h100", "pcie", "", "H100 PCIe", 51.2 * T, 378.0 * T, 756.0 * T, 756.0 * T,
     "NVIDIA H100 whitepaper, PCIe"},
    // H100 NVL datasheet (per GPU): FP32 60 TF; TF32 835, BF16/FP16 1671 TF with sparsity.
    {"h100", "nvl", "", "H100 NVL", 60.0 * T, 417.5 * T, 835.5 * T, 835.5 * T,
     "NVIDIA H100 NVL datasheet, sparse figures halved"},
    // H200 datasheet: the H100 SXM5 compute (FP32 67, TF32 989*, BF16 1979* with sparsity) with
    // HBM3e; H200 NVL: FP32 60, TF32 835*, BF16 1671*.
    {"h200", "", "nvl", "H200 SXM", 66.9 * T, 494.7 * T, 989.4 * T, 989.4 * T,
     "NVIDIA H200 datasheet (= H100 SXM5 whitepaper compute), sparse figures halved"},
    {"h200", "nvl", "", "H200 NVL", 60.0 * T, 417.5 * T, 835.5 * T, 835.5 * T,
     "NVIDIA H200 NVL datasheet, sparse figures halved"},
    // Ampere datacenter. NVIDIA A100 datasheet: FP32 19.5, TF32 156, BF16/FP16 312 dense (the
    // PCIe card has the same peaks at a lower power limit).
    {"a100", "sxm", "", "A100 SXM", 19.5 * T, 156.0 * T, 312.0 * T, 312.0 * T,
     "NVIDIA A100 datasheet"},
    {"a100", "pcie", "", "A100 PCIe", 19.5 * T, 156.0 * T, 312.0 * T, 312.0 * T,
     "NVIDIA A100 datasheet"},
    // Turing. NVIDIA Turing GPU Architecture whitepaper (2018), reference board at 1545 MHz
    // (Founders Edition 1635 MHz: 14.2 / 56.9). No tf32/bf16; FP16 tensor with FP32 accumulate
    // runs at half the FP16-accumulate rate (107.6) on GeForce.
    {"2080 ti", "", "", "RTX 2080 Ti", 13.4 * T, std::nullopt, std::nullopt, 53.8 * T,
     "NVIDIA Turing whitepaper, reference board"},
    // Ampere GeForce. NVIDIA Ampere GA102 whitepaper: RTX 3090 (82 SMs, 1695 MHz) FP32 35.6,
    // TF32 35.6, BF16/FP16 with FP32 accumulate 71 (FP16 accumulate 142).
    {"rtx 3090", "", "ti|laptop|mobile", "RTX 3090", 35.6 * T, 35.6 * T, 71.0 * T, 71.0 * T,
     "NVIDIA GA102 whitepaper"},
    // RTX 3060 is not in a whitepaper: GA10x per-SM rates above (128 FP32 FMA, 128 TF32 FMA,
    // 256 BF16/FP16 FMA with FP32 accumulate per clock) x 28 SMs x 1777 MHz boost.
    {"rtx 3060", "", "ti|laptop|mobile", "RTX 3060", 12.74 * T, 12.74 * T, 25.47 * T, 25.47 * T,
     "derived: GA102 whitepaper per-SM rates x 28 SMs x 1.777 GHz (NVIDIA spec page)"},
    // Ada. NVIDIA Ada Lovelace architecture whitepaper: RTX 4090 (128 SMs, 2520 MHz) FP32 82.6,
    // TF32 82.6, BF16/FP16 with FP32 accumulate 165.2 (FP16 accumulate 330.3). "4090 D" is a
    // cut-down variant.
    {"rtx 4090", "", "4090 d|laptop|mobile", "RTX 4090", 82.6 * T, 82.6 * T, 165.2 * T, 165.2 * T,
     "NVIDIA Ada whitepaper"},
    // NVIDIA L4 datasheet: FP32 30.3; TF32 120, BF16/FP16 242 TF with sparsity.
    {"l4", "", "", "L4", 30.3 * T, 60.0 * T, 121.0 * T, 121.0 * T,
     "NVIDIA L4 datasheet, sparse figures halved"},
    // NVIDIA L40S datasheet: FP32 91.6; TF32 183 (366 sparse); BF16/FP16 362.05 (733 sparse).
    {"l40s", "", "", "L40S", 91.6 * T, 183.0 * T, 362.05 * T, 362.05 * T, "NVIDIA L40S datasheet"},
    // Apple M1 family GPUs: Apple's announcements (Nov 2020: M1 "2.6 teraflops"; Oct 2021:
    // M1 Pro "5.2", M1 Max "10.4"). These are the full GPUs (8, 16, 32 cores); the name does not
    // say when a machine has the smaller 7-, 14- or 24-core GPU, whose peaks are 7/8, 14/16,
    // 24/32 of these. fp32 only: no tensor cores.
    {"apple m1", "", "pro|max|ultra", "Apple M1 GPU (8-core)", 2.6 * T, std::nullopt, std::nullopt,
     std::nullopt, "Apple M1 announcement"},
    {"apple m1 pro", "", "", "Apple M1 Pro GPU (16-core)", 5.2 * T, std::nullopt, std::nullopt,
     std::nullopt, "Apple M1 Pro announcement"},
    {"apple m1 max", "", "", "Apple M1 Max GPU (32-core)", 10.4 * T, std::nullopt, std::nullopt,
     std::nullopt, "Apple M1 Max announcement"},
}};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_word_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0;
}

// `word` occurs in `text` starting at a word boundary (and, if whole, ending at one too).
bool has_word(const std::string& text, std::string_view word, bool whole) {
  for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) {
    const bool start_ok = at == 0 || !is_word_char(text[at - 1]);
    const size_t end = at + word.size();
    const bool end_ok = !whole || end == text.size() || !is_word_char(text[end]);
    if (start_ok && end_ok) return true;
  }
  return false;
}

// Any of the '|'-separated words of `list`, each matched at the start of a word only ("sxm"
// must match "a100-sxm4").
bool has_any(const std::string& text, std::string_view list) {
  while (!list.empty()) {
    const size_t bar = list.find('|');
    const std::string_view w = list.substr(0, bar);
    if (!w.empty() && has_word(text, w, false)) return true;
    if (bar == std::string_view::npos) break;
    list.remove_prefix(bar + 1);
  }
  return false;
}

GpuPeaks to_peaks(const GpuRow& r) {
  return {r.name, r.fp32, r.tf32, r.bf16, r.fp16, r.source};
}

}  // namespace

std::optional<GpuPeaks> gpu_peaks(std::string_view device_name) {
  const std::string name = lower(device_name);
  for (const GpuRow& r : kGpus) {
    if (!has_word(name, r.key, true)) continue;
    if (*r.also && !has_any(name, r.also)) continue;
    if (*r.unless && has_any(name, r.unless)) continue;
    return to_peaks(r);
  }
  return std::nullopt;
}

std::optional<Peak> gpu_peak(std::string_view device_name, Precision p) {
  auto row = gpu_peaks(device_name);
  if (!row) return std::nullopt;
  std::optional<double> v = p == Precision::fp32   ? row->fp32
                            : p == Precision::tf32 ? row->tf32
                                                   : row->bf16;
  if (!v) return std::nullopt;
  return Peak{
      *v, fmt::format("datasheet: {} {} dense ({})", row->name, precision_name(p), row->source)};
}

std::vector<GpuPeaks> gpu_peak_table() {
  std::vector<GpuPeaks> out;
  for (const GpuRow& r : kGpus) {
    if (std::none_of(out.begin(), out.end(), [&](const GpuPeaks& g) { return g.name == r.name; })) {
      out.push_back(to_peaks(r));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// CPU estimate

namespace {

struct FmaRate {
  int lanes = 0;  // fp32 lanes per instruction (the effective width)
  int units = 0;  // FMA instructions per cycle
  const char* why = "";
};

// fp32 FMA throughput of one core. Assumptions, each a known source of error:
//  - AVX-512 Intel: 2 x 512-bit FMA units (Xeon Gold 6xxx/Platinum, Sapphire Rapids and later);
//    Xeon Silver/Bronze and most client chips have 1, so this is 2x high for them.
//  - AMD Zen 4 (family 0x19 with AVX-512): 512-bit FMAs run on two 256-bit pipes, so the rate
//    equals AVX2's. Zen 5 (0x1a) has full 512-bit pipes.
//  - AVX2 + FMA: 2 x 256-bit FMA units (Intel Haswell and later, AMD Zen 2 and later); Zen 1
//    (family 0x17, model < 0x30) has 2 x 128-bit, i.e. one 256-bit FMA per cycle.
//  - AVX without FMA: one multiply and one add port (8 lanes each), counted as one FMA.
FmaRate fma_rate(const CpuInfo& c) {
  const bool amd = c.vendor == "AuthenticAMD";
  if (c.avx512f) {
    if (amd && c.family == 0x19) return {16, 1, "AVX-512 on Zen 4's 2 x 256-bit FMA pipes"};
    return {16, 2, "AVX-512, 2 x 512-bit FMA units assumed"};
  }
  if (c.avx2 && c.fma) {
    if (amd && c.family == 0x17 && c.model_number < 0x30) {
      return {8, 1, "AVX2 on Zen 1's 128-bit FMA pipes"};
    }
    return {8, 2, "AVX2, 2 x 256-bit FMA units assumed"};
  }
  if (c.vendor == "GenuineIntel" || amd)
    return {8, 1, "no AVX2/FMA: AVX with 1 mul + 1 add port assumed"};
  return {};  // not x86: vector units unknown
}

bool has_bf16_arithmetic(const CpuInfo& c) {
  return c.avx512_bf16 || c.amx_bf16;
}

}  // namespace

std::optional<Peak> cpu_peak_estimate(const CpuInfo& c, Precision p, int threads) {
  const FmaRate r = fma_rate(c);
  if (r.lanes == 0 || c.max_mhz <= 0) return std::nullopt;
  // SMT siblings share a core's FMA units: more threads than cores adds nothing.
  const int usable = threads > 0 ? std::min(threads, c.usable_cpus) : c.usable_cpus;
  const int cores = std::max(1, std::min(usable, c.physical_cores));
  const double ghz = c.max_mhz / 1000.0;
  // Without cpufreq (VMs) the clock is the nominal one; turbo runs faster, so a measured
  // product can beat this estimate.
  const std::string clock = fmt::format(
      "{:.2f} GHz ({}{})", ghz, c.mhz_source,
      c.mhz_source.find("cpufreq") == std::string::npos ? ", nominal: turbo not counted" : "");
  const double fp32_per_cycle = r.lanes * r.units * 2.0;
  std::string note = r.why;
  double per_cycle = fp32_per_cycle;
  std::string formula = fmt::format("{} cores x {} fp32 lanes x {} FMA units x 2 FLOP x {}", cores,
                                    r.lanes, r.units, clock);

  if (p == Precision::bf16) {
    if (c.amx_bf16) {
      // TDPBF16PS: a 16x32 by 32x16 bf16 tile product (8192 MACs) every 16 cycles per core.
      per_cycle = 1024;
      formula = fmt::format("{} cores x 1024 bf16 FLOP/cycle (AMX-BF16) x {}", cores, clock);
      note = "AMX TDPBF16PS: 16x16x32 MACs per 16 cycles per core";
    } else if (c.avx512_bf16) {
      // VDPBF16PS: two bf16 products into each fp32 lane, same port throughput as VFMADD.
      per_cycle = 2 * fp32_per_cycle;
      formula += " x 2 (AVX512_BF16 dot products)";
    } else {
      return std::nullopt;
    }
  } else if (p == Precision::tf32) {
    note += "; no tf32 on CPUs, runs as fp32";
  }
  return Peak{cores * per_cycle * ghz * 1e9, fmt::format("estimate: {} ({})", formula, note)};
}

// ---------------------------------------------------------------------------------------------
// Measured: oneDNN matmul

namespace {

using Clock = std::chrono::steady_clock;

// Restores OpenMP's thread count when the measurement ends, however it ends.
struct OmpThreadsScope {
  int prev;
  explicit OmpThreadsScope(int n) : prev(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreadsScope() { omp_set_num_threads(prev); }
  OmpThreadsScope(const OmpThreadsScope&) = delete;
  OmpThreadsScope& operator=(const OmpThreadsScope&) = delete;
};

struct GemmSetup {
  dnnl::matmul prim;
  dnnl::memory a, b, c;
  std::string impl;
};

template <typename T>
void fill(dnnl::memory& m, T value) {
  T* p = static_cast<T*>(m.get_data_handle());
  std::fill(p, p + m.get_desc().get_size() / sizeof(T), value);
}

// nullopt when oneDNN has no implementation (bf16 on AVX2 in oneDNN 2.x).
std::optional<GemmSetup> make_gemm(const dnnl::engine& eng, int64_t n, bool bf16) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const dt in = bf16 ? dt::bf16 : dt::f32;
  dnnl::memory::desc a({n, n}, in, tag::ab), c({n, n}, dt::f32, tag::ab);
  // Weights in whatever layout the fastest kernel wants, as a trained layer would hold them.
  dnnl::memory::desc b({n, n}, in, tag::any);
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), eng);
    GemmSetup s{dnnl::matmul(pd), dnnl::memory(a, eng), dnnl::memory(pd.weights_desc(), eng),
                dnnl::memory(c, eng), pd.impl_info_str()};
    if (bf16) {
      fill<uint16_t>(s.a, f32_to_bf16(0.5f));
      fill<uint16_t>(s.b, f32_to_bf16(0.25f));
    } else {
      fill(s.a, 0.5f);
      fill(s.b, 0.25f);
    }
    return s;
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}

double seconds_of_run(GemmSetup& g, dnnl::stream& s) {
  const auto t0 = Clock::now();
  g.prim.execute(s, {{DNNL_ARG_SRC, g.a}, {DNNL_ARG_WEIGHTS, g.b}, {DNNL_ARG_DST, g.c}});
  s.wait();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

GemmMeasurement measure_cpu_gemm(Precision p, int threads, double seconds_budget) {
  const CpuInfo cpu = cpu_info();
  GemmMeasurement r;
  r.threads = threads > 0 ? threads : cpu.usable_cpus;
  const bool bf16 = p == Precision::bf16;
  r.native = !bf16 || has_bf16_arithmetic(cpu);
  const char* type = bf16 ? "bf16" : "f32";
  const auto start = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };

  OmpThreadsScope omp_threads(r.threads);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(eng);

  // Grow n while the next size (8x the work) still fits a fifth of the budget: small products
  // are below the plateau (packing and threading overheads), big ones cost time we don't have.
  int64_t n = 256;
  std::optional<GemmSetup> g = make_gemm(eng, n, bf16);
  if (!g) {
    r.impl = "none";
    r.source = fmt::format("measured: none, oneDNN {}.{}.{} has no {} matmul for {}",
                           dnnl::version()->major, dnnl::version()->minor, dnnl::version()->patch,
                           type, cpu.isa);
    return r;
  }
  seconds_of_run(*g, stream);  // first run: page faults, JIT caches
  double t = seconds_of_run(*g, stream);
  while (n < 4096 && 8 * t <= seconds_budget / 5) {
    auto bigger = make_gemm(eng, n * 2, bf16);
    if (!bigger) break;
    g = std::move(bigger);
    n *= 2;
    seconds_of_run(*g, stream);
    t = seconds_of_run(*g, stream);
  }

  // Best of the runs: the plateau, not the mean, is what a peak means; noise only slows runs.
  double best = t;
  r.runs = 1;
  while (r.runs < 50 && (r.runs < 3 || elapsed() + best < seconds_budget)) {
    best = std::min(best, seconds_of_run(*g, stream));
    ++r.runs;
  }
  r.n = n;
  r.impl = g->impl;
  r.flops_per_s = 2.0 * static_cast<double>(n) * n * n / best;
  r.source = fmt::format("measured: oneDNN matmul {} {}^3, {} threads, best of {} ({}{})", type, n,
                         r.threads, r.runs, r.impl,
                         r.native ? "" : "; emulated: this CPU has no bf16 arithmetic");
  return r;
}

double measure_cpu_gemm_flops(Precision p, int threads, double seconds_budget) {
  // No bf16 arithmetic: whatever oneDNN emulates is not a peak of this precision.
  if (p == Precision::bf16 && !has_bf16_arithmetic(cpu_info())) return 0.0;
  const GemmMeasurement m = measure_cpu_gemm(p, threads, seconds_budget);
  return m.native ? m.flops_per_s : 0.0;
}

// ---------------------------------------------------------------------------------------------
// Memory bandwidth (the roofline's other roof)

std::optional<double> gpu_memory_bandwidth(std::string_view device_name, std::string* source) {
  struct Row {
    const char* peaks_name;  // GpuPeaks::name of the device
    double bytes_per_s;
    const char* source;
  };
  static const Row kRows[] = {
      {"H100 SXM5", 3.35e12, "datasheet: H100 SXM5 HBM3 3.35 TB/s"},
      {"H100 PCIe", 2.0e12, "datasheet: H100 PCIe HBM2e 2.0 TB/s"},
      {"H100 NVL", 3.9e12, "datasheet: H100 NVL HBM3 3.9 TB/s"},
      {"H200 SXM", 4.8e12, "datasheet: H200 HBM3e 4.8 TB/s"},
      {"H200 NVL", 4.8e12, "datasheet: H200 NVL HBM3e 4.8 TB/s"},
      {"A100 SXM", 2.0e12, "datasheet: A100 80GB 2.0 TB/s (the 40GB part: 1.56)"},
      {"A100 PCIe", 2.0e12, "datasheet: A100 80GB 2.0 TB/s (the 40GB part: 1.56)"},
  };
  const std::optional<GpuPeaks> g = gpu_peaks(device_name);
  if (!g) return std::nullopt;
  for (const Row& r : kRows) {
    if (g->name != r.peaks_name) continue;
    if (source) *source = r.source;
    return r.bytes_per_s;
  }
  return std::nullopt;
}

double measure_memory_bandwidth(int threads, double seconds_budget, std::string* source) {
  const size_t bytes = size_t(64) << 20;
  std::vector<char> a(bytes, 1), b(bytes, 2);  // filled: every page is touched before timing
  const int nt = std::max(1, threads);
  auto copy_once = [&] {
    const auto t0 = Clock::now();
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int k = 0; k < nt; ++k) {
      const size_t lo = bytes * size_t(k) / size_t(nt), hi = bytes * size_t(k + 1) / size_t(nt);
      std::memcpy(b.data() + lo, a.data() + lo, hi - lo);
    }
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  copy_once();
  const auto start = Clock::now();
  double best = copy_once();
  int runs = 1;
  while (runs < 3 || std::chrono::duration<double>(Clock::now() - start).count() < seconds_budget) {
    best = std::min(best, copy_once());
    if (++runs >= 100) break;
  }
  const double bw = 2.0 * double(bytes) / best;
  if (source)
    *source = fmt::format("measured: memcpy 64 MiB, {} thread{}, best of {} (read + write)", nt,
                          nt == 1 ? "" : "s", runs);
  return bw;
}

}  // namespace tb
