#include "report/summary.h"

#include <fmt/format.h>

#include "train/checkpoint.h"

namespace tb {

namespace {

std::string mfu_text(const nlohmann::json& mfu, const std::optional<double>& peak,
                     const std::string& source) {
  if (!peak) return "unknown";
  if (mfu.is_null())
    return fmt::format("unknown (the run beat {:.0f} GFLOP/s: it is low)", *peak / 1e9);
  return fmt::format("{:.1f}% of {:.0f} GFLOP/s ({})", 100 * mfu.get<double>(), *peak / 1e9,
                     source);
}

}  // namespace

void print_run_summary(const nlohmann::json& record, const RunFacts& f) {
  const TrainResult& t = f.train;
  const nlohmann::json& fl = record["flops"];
  const DeviceFacts& d = f.device;
  fmt::print("train {:.2f}s, test {:.2f}s, train+test {:.2f}s (load {:.2f}s)\n", t.train_seconds,
             f.test.seconds, t.train_seconds + f.test.seconds, f.load_seconds);
  if (f.resumed)
    fmt::print(
        "resumed {} from {} (written by {}); its {:.2f}s of training are not in the times "
        "above\n",
        checkpoint_place(*f.resumed), f.resumed_path, f.resumed->device,
        record["times_s"]["train_before_resume"].get<double>());
  if (t.checkpoints > 0)
    fmt::print("checkpoint: {} ({} written, {:.2f}s, not in the times above)\n", f.checkpoint_path,
               t.checkpoints, t.checkpoint_seconds);
  if (t.diverged)
    fmt::print("throughput {:.0f} images/s ({:.0f} steady); diverged: no test pass\n",
               t.images_per_s, t.images_per_s_steady);
  else
    fmt::print(
        "throughput {:.0f} images/s ({:.0f} steady), test accuracy {:.4f}, test loss {:.4f}\n",
        t.images_per_s, t.images_per_s_steady, f.test.accuracy, f.test.loss);
  if (record.contains("projected")) {
    const nlohmann::json& p = record["projected"];
    fmt::print(
        "projected whole run ({} epochs, {} steps): train {:.0f}s, test {:.1f}s, train+test "
        "{:.0f}s, from {} of {} training images at the steady rate\n",
        record["epochs"].get<int>(), p["steps"].get<int64_t>(), p["times_s"]["train"].get<double>(),
        p["times_s"]["test"].get<double>(), p["times_s"]["train_test"].get<double>(),
        p["from"]["train_images"].get<int64_t>(), p["from"]["of_train_images"].get<int64_t>());
  }
  if (fl.value("peak_datasheet_low", false))
    fmt::print(
        "achieved {:.1f} GFLOP/s; MFU {}; the {:.0f} GFLOP/s estimate ({}) is below what this "
        "machine measured or achieved, so it is known to be low\n",
        fl["achieved_per_s"].get<double>() / 1e9,
        mfu_text(fl["mfu_measured"], d.peak_measured, d.peak_measured_source),
        *d.peak_datasheet / 1e9, d.peak_datasheet_source);
  else
    fmt::print("achieved {:.1f} GFLOP/s; MFU {}; measured-peak MFU {}\n",
               fl["achieved_per_s"].get<double>() / 1e9,
               mfu_text(fl["mfu_datasheet"], d.peak_datasheet, d.peak_datasheet_source),
               mfu_text(fl["mfu_measured"], d.peak_measured, d.peak_measured_source));
  const nlohmann::json& mean = f.utilisation["mean"];
  if (mean.contains("by_phase") && mean["by_phase"].contains("train")) {
    const nlohmann::json& tr = mean["by_phase"]["train"];
    std::string line = fmt::format("utilisation while training: process CPU {:.0f}%",
                                   tr.value("proc_cpu_pct", 0.0));
    if (tr.contains("gpu_busy_pct"))
      line += fmt::format(", GPU busy {:.0f}%", tr["gpu_busy_pct"].get<double>());
    fmt::print("{}\n", line);
  }
  if (t.split.samples > 0)
    fmt::print(
        "step split (ms, {} sampled steps): data {:.3f}, forward {:.3f}, loss {:.3f}, backward "
        "{:.3f}, {}optimizer {:.3f}\n",
        t.split.samples, t.split.data_ms, t.split.forward_ms, t.split.loss_ms, t.split.backward_ms,
        f.ranks.world > 1 ? fmt::format("gradient exchange {:.3f}, ", t.split.exchange_ms) : "",
        t.split.optimizer_ms);
  if (f.ranks.world > 1 && f.exchange.steps > 0)
    fmt::print("{} ranks ({}): allreduce {:.3f} ms a step, {:.3f} of it exposed after backward\n",
               f.ranks.world, f.ranks.engine, f.exchange.span_ms / double(f.exchange.steps),
               f.exchange.exposed_ms / double(f.exchange.steps));
  if (t.split.host_samples > 0)
    fmt::print("host issues a step in {:.3f} ms of its {:.3f} ({} sampled steps)\n",
               t.split.host_ms, t.split.whole_ms, t.split.host_samples);
  if (f.config.device != DeviceKind::cpu) fmt::print("step graphs: {}\n", f.step_graphs);
  if (f.config.device == DeviceKind::cpu && f.config.precision == Precision::bf16)
    fmt::print("maps in bf16: {} ({})\n", f.bf16_maps,
               f.bf16_maps > 0 ? "convolutions' outputs, and batch norms' that convolutions read"
                               : "none: every map fp32");
  if (f.config.cuda.fused_mlp || f.fused_mlp_step)
    fmt::print("fused MLP step: {}\n",
               f.fused_mlp_step ? "taken" : "declined (this model or batch does not fit it)");
  if (t.split.samples == 0 && f.fused_mlp_step)
    fmt::print(
        "step split: none (each step runs as one fused op; `trainbench profile` times its "
        "ops one by one)\n");
  else if (t.split.samples == 0 || t.split.host_samples == 0)
    fmt::print("step split: not sampled (too few steps)\n");
  if (record.contains("repeats")) {
    const nlohmann::json& tt = record["repeats"]["train_test_s"];
    fmt::print("{} runs: train+test median {:.2f}s (min {:.2f}s, max {:.2f}s, spread {:.1f}%)\n",
               f.repeats.train_s.size(), tt["median"].get<double>(), tt["min"].get<double>(),
               tt["max"].get<double>(), 100 * tt["spread"].get<double>());
  }
}

}  // namespace tb
