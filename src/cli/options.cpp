// Options several commands share: precision, the CUDA paths, CPU threads, bounded numbers.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdlib>

#include "cli/commands.h"
#include "core/error.h"

namespace tb {

// A number in [lo, hi]. CLI::Range alone lets "nan" through (every comparison with NaN is false),
// and a NaN learning rate would train to NaN without a word.
CLI::Validator finite_in(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (end == s.c_str() || *end != '\0' || !std::isfinite(v) || v < lo || v > hi)
          return "Value " + s + " is not a number from " + CLI::detail::to_string(lo) + " to " +
                 CLI::detail::to_string(hi);
        return "";
      },
      "FINITE");
}

Precision parse_precision(const std::string& s) {
  if (s == "fp32") return Precision::fp32;
  if (s == "tf32") return Precision::tf32;
  if (s == "bf16") return Precision::bf16;
  fail("--precision: '{}' is not fp32, tf32 or bf16", s);
}

void add_cuda_path_flags(CLI::App* cmd, CudaPaths& p) {
  cmd->add_flag("!--no-graphs", p.graphs,
                "issue every op of every step (no CUDA graph replay; to measure what it saves)");
  cmd->add_flag("!--no-bf16-reuse", p.bf16_reuse,
                "bf16: convert every operand at every call (no bf16 weights mirror, no copies "
                "kept between a convolution's directions)");
  cmd->add_flag("!--no-bn-slices", p.bn_slices,
                "CUDA: batch norm one block per channel, also where few channels hold many values");
  cmd->add_flag("--nhwc", p.nhwc,
                "CUDA bf16: convolutions on channels-last (NHWC) copies, to compare layouts");
  cmd->add_flag("--fused-mlp", p.fused_mlp,
                "CUDA fp32: a one-hidden-layer MLP's step in three kernels instead of ~9 ops");
  cmd->add_flag("!--nchw", p.cpu_nhwc,
                "CPU: activations in NCHW instead of NHWC (the layout before; to compare layouts)");
  cmd->add_flag("!--no-fused-mlp", p.cpu_fused_mlp,
                "CPU fp32: issue a one-hidden-layer MLP's ops one by one instead of its fused step "
                "(to measure what it saves)");
  cmd->add_flag("!--fp32-maps", p.cpu_bf16_maps,
                "CPU bf16: keep the maps between convolutions and batch norms in fp32, each "
                "convolution converting its input (to measure what bf16 maps save)");
}

void apply_cuda_paths(const CudaPaths& p, BackendConfig& cfg) {
  const bool cuda = cfg.device == DeviceKind::cuda;
  TB_CHECK(!p.nhwc || (cuda && cfg.precision == Precision::bf16),
           "--nhwc: only for --device cuda --precision bf16 (the layout of its convolutions' "
           "bf16 copies)");
  TB_CHECK(p.bf16_reuse || cfg.precision == Precision::bf16,
           "--no-bf16-reuse: only for --precision bf16 (no other run makes bf16 copies)");
  TB_CHECK(p.bn_slices || cuda, "--no-bn-slices: only for --device cuda (its batch norm kernels)");
  TB_CHECK(!p.fused_mlp || (cuda && cfg.precision == Precision::fp32),
           "--fused-mlp: only for --device cuda --precision fp32 (its kernels compute in fp32)");
  TB_CHECK(p.cpu_nhwc || cfg.device == DeviceKind::cpu,
           "--nchw: only for --device cpu (the other backends take NCHW only)");
  TB_CHECK(p.cpu_fused_mlp || (cfg.device == DeviceKind::cpu && cfg.precision == Precision::fp32),
           "--no-fused-mlp: only for --device cpu --precision fp32 (where the step is fused by "
           "default)");
  TB_CHECK(p.cpu_bf16_maps || (cfg.device == DeviceKind::cpu && cfg.precision == Precision::bf16),
           "--fp32-maps: only for --device cpu --precision bf16 (where the maps are bf16 by "
           "default)");
  cfg.graphs = p.graphs;
  cfg.cpu_nhwc = p.cpu_nhwc;
  cfg.cpu_fused_mlp = p.cpu_fused_mlp;
  cfg.reuse_bf16 = p.bf16_reuse;
  cfg.bf16_maps = p.cpu_bf16_maps;
  cfg.cuda.bn_slices = p.bn_slices;
  cfg.cuda.bf16_nhwc = p.nhwc;
  cfg.cuda.fused_mlp = p.fused_mlp;
}

int cpu_threads_of(const BackendConfig& cfg) {
  if (cfg.device != DeviceKind::cpu) return 0;
  const int cpus = cpu_threads_available();
  const int threads = cfg.threads > 0 ? cfg.threads : cpus;
  // More threads than CPUs wait on each other at every parallel loop: a figure of the machine's
  // scheduler, not of training (500 threads on 2 CPUs: a fashion-mlp step 100x slower).
  if (threads > cpus)
    fmt::print(stderr,
               "trainbench: warning: --threads {} is more than the {} CPUs this process may use; "
               "the times will measure threads waiting on each other\n",
               threads, cpus);
  return threads;
}

}  // namespace tb
