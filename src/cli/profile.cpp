// `trainbench profile WORKLOAD`: per-layer forward/backward time, FLOPs, bytes and share of the
// step (see report/profile.h), printed, and with --out written as JSON for `compare --html`.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "backends/backend.h"
#include "bench/device_facts.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/file.h"
#include "report/profile.h"
#include "train/executor.h"
#include "train/step_timing.h"

namespace tb {

CLI::App* add_profile_command(CLI::App& app, ProfileCommandOptions& o) {
  auto* cmd = app.add_subcommand(
      "profile", "Per-layer forward/backward time, FLOPs, bytes and share of a training step");
  cmd->add_option("workload", o.workload, "fashion-mlp | resnet50-cifar10")->required();
  cmd->add_option("--device", o.device, "cpu | cuda[:N] | vulkan[:N]")->capture_default_str();
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

  const DeviceFacts dev = device_facts(cfg, *backend, hp.threads, {false, true});
  Roofline roof;
  roof.peak_flops = dev.peak_datasheet, roof.peak_source = dev.peak_datasheet_source;
  roof.other_peaks = dev.other_peaks;
  roof.bandwidth = dev.bandwidth, roof.bandwidth_source = dev.bandwidth_source;
  DatasetPair data = load_workload_data(w, o.data);
  Model model = build_workload_model(w, data.train);
  Executor ex(model, *backend, hp, w, data);
  const StepTimings t = time_steps(ex, o.steps, 2);

  ProfileReport r = build_profile(model, ex.plan(), t, roof);
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
