// `trainbench profile WORKLOAD`: per-layer forward/backward time, FLOPs, bytes and share of the
// step (see report/profile.h), printed, and with --out written as JSON for `compare --html`.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "backends/backend.h"
#include "bench/machine.h"
#include "bench/peaks.h"
#include "cli/commands.h"
#include "core/error.h"
#include "report/compare.h"
#include "report/profile.h"
#include "train/trainer.h"
#ifdef TRAINBENCH_HAVE_CUDA
#include "backends/cuda/cuda_info.h"
#endif

namespace tb {

CLI::App* add_profile_command(CLI::App& app, ProfileCommandOptions& o) {
  auto* cmd = app.add_subcommand(
      "profile", "Per-layer forward/backward time, FLOPs, bytes and share of a training step");
  cmd->add_option("workload", o.workload, "fashion-mlp | resnet50-cifar10")->required();
  cmd->add_option("--device", o.device, "cpu | cuda | cuda:N")->capture_default_str();
  cmd->add_option("--precision", o.precision, "fp32 | tf32 | bf16")
      ->check(CLI::IsMember({"fp32", "tf32", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--batch", o.batch, "batch size (workload default)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--steps", o.steps, "timed steps of each kind")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  cmd->add_option("--data", o.data, "data set path (default: the workload's location)");
  cmd->add_option("--threads", o.threads, "CPU threads (default: all usable cores)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--out", o.out, "write the profile as JSON here (for compare --html)");
  cmd->add_flag("--deterministic", o.deterministic,
                "no algorithm chosen by timing (as `run --deterministic`)");
  add_cuda_path_flags(cmd, o.paths);
  return cmd;
}

namespace {

struct DeviceFacts {
  std::string name;
  Roofline roof;
};

DeviceFacts cpu_facts(Precision p, int threads) {
  const CpuInfo cpu = cpu_info();
  DeviceFacts f;
  f.name = cpu.model;
  if (auto peak = cpu_peak_estimate(cpu, p, threads))
    f.roof.peak_flops = peak->flops_per_s, f.roof.peak_source = peak->source;
  f.roof.bandwidth = measure_memory_bandwidth(threads, 0.2, &f.roof.bandwidth_source);
  return f;
}

DeviceFacts gpu_facts(int index, Precision p) {
  DeviceFacts f;
#ifdef TRAINBENCH_HAVE_CUDA
  const CudaDeviceInfo gpu = cuda_devices().at(size_t(index));
  f.name = gpu.name;
  if (auto peak = gpu_peak(gpu.name, p))
    f.roof.peak_flops = peak->flops_per_s, f.roof.peak_source = peak->source;
  if (p == Precision::bf16)  // layers bf16's kernels refuse run in tf32 (OpCache::precision)
    if (auto peak = gpu_peak(gpu.name, Precision::tf32))
      f.roof.other_peaks[Precision::tf32] = peak->flops_per_s;
  f.roof.bandwidth = gpu_memory_bandwidth(gpu.name, &f.roof.bandwidth_source);
  if (!f.roof.bandwidth && gpu.memory_clock_khz > 0 && gpu.memory_bus_width_bits > 0) {
    // Double data rate: two transfers per memory clock over the whole bus.
    f.roof.bandwidth = 2.0 * gpu.memory_clock_khz * 1e3 * gpu.memory_bus_width_bits / 8.0;
    f.roof.bandwidth_source = "derived: 2 x memory clock x bus width (CUDA device properties)";
  }
#else
  (void)index, (void)p;
#endif
  return f;
}

}  // namespace

int profile_command(const ProfileCommandOptions& o) {
  BackendConfig cfg;
  parse_device(o.device, &cfg.device, &cfg.device_index);
  cfg.precision = parse_precision(o.precision);
  cfg.threads = o.threads > 0 ? o.threads : 0;
  cfg.deterministic = o.deterministic;
  apply_cuda_paths(o.paths, cfg);
  std::unique_ptr<Backend> backend = make_backend(cfg);
  const Workload& w = find_workload(o.workload);
  Hyper hp = w.defaults;
  hp.precision = cfg.precision;
  if (o.batch > 0) hp.batch = o.batch;
  hp.threads = cpu_threads_of(cfg);
  hp.data = o.data;

  const DeviceFacts dev = cfg.device == DeviceKind::cpu
                              ? cpu_facts(cfg.precision, hp.threads)
                              : gpu_facts(cfg.device_index, cfg.precision);
  DatasetPair data = load_workload_data(w, o.data);
  Model model = build_workload_model(w, data.train);
  Trainer trainer(model, *backend, hp, w, data);
  const StepTimings t = time_steps(trainer, o.steps, 2);

  ProfileReport r = build_profile(model, t, dev.roof);
  r.workload = w.name, r.device = dev.name, r.device_kind = o.device;
  r.precision = o.precision, r.threads = hp.threads;
  fmt::print("{}", format_profile_text(r));
  if (!o.out.empty()) {
    write_text_atomic(o.out, profile_json(r).dump(2) + "\n");
    fmt::print("profile: {}\n", o.out);
  }
  return 0;
}

}  // namespace tb
