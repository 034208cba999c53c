// `trainbench evaluate CHECKPOINT`: the test pass of a trained model, as it stands in a checkpoint,
// on any device and precision, over the test set or the training set. A run's own test pass
// says how well it trained; this one answers the questions after: does the model that trained in
// bf16 (or on the GPU) test the same in fp32 (or on the CPU)? How far apart are its training and
// test accuracy with batch norm in eval mode?
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <optional>
#include <utility>

#include "backends/backend.h"
#include "bench/device_facts.h"
#include "cli/commands.h"
#include "core/error.h"
#include "report/record.h"
#include "train/checkpoint.h"
#include "train/executor.h"
#include "train/torch_weights.h"

namespace tb {

CLI::App* add_evaluate_command(CLI::App& app, EvaluateCommandOptions& o) {
  auto* cmd = app.add_subcommand(
      "evaluate", "Test a checkpoint's model: accuracy and loss on the test (or training) set");
  cmd->add_option("checkpoint", o.checkpoint,
                  "a checkpoint written by run --checkpoint, or weights in PyTorch's names "
                  "(FILE.safetensors)")
      ->required();
  cmd->add_option("--workload", o.workload,
                  "a .safetensors file's workload, where its metadata does not say it");
  cmd->add_option("--device", o.device, "cpu | cuda[:N] | vulkan[:N]")->capture_default_str();
  cmd->add_option("--precision", o.precision,
                  "fp32 | tf32 | bf16 (default: the one it trained in; fp32 for tf32 on a CPU)")
      ->check(CLI::IsMember({"fp32", "tf32", "bf16"}));
  cmd->add_option("--split", o.split, "test | train: which set to test on")
      ->check(CLI::IsMember({"test", "train"}))
      ->capture_default_str();
  cmd->add_option("--batch", o.batch, "images a batch (default: the run's)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--data", o.data, "data set path (default: the workload's location)");
  cmd->add_option("--threads", o.threads, "CPU threads (default: all usable cores)")
      ->check(CLI::Range(1, 4096));
  cmd->add_flag("--reference", o.reference, "use the plain-loop reference backend (slow)");
  cmd->add_flag("--deterministic", o.deterministic, "no algorithm chosen by timing");
  cmd->add_option("--out", o.out, "write the result as JSON here");
  cmd->add_option("--logits", o.logits,
                  "write every tested image's logits here (float32 [images, classes], in order)");
  return cmd;
}

int evaluate_command(const EvaluateCommandOptions& o) {
  // The file first: a wrong path fails before a device or data set is touched. A .safetensors
  // file's tensors are read once the data has given the model its shape.
  std::optional<SafeTensorsReader> weights;
  Checkpoint c;
  if (is_safetensors_path(o.checkpoint)) {
    c.workload = safetensors_workload(weights.emplace(o.checkpoint), o.workload);
    c.hyper = nlohmann::json::object();
  } else {
    c = read_checkpoint(o.checkpoint);
    TB_CHECK(o.workload.empty() || o.workload == c.workload,
             "checkpoint {} is of workload {}, not {}", o.checkpoint, c.workload, o.workload);
  }
  const Workload& w = find_workload(c.workload);
  const std::string trained_precision = c.hyper.value("precision", "fp32");

  BackendConfig cfg;
  parse_device(o.device, &cfg.device, &cfg.device_index);
  std::string precision = o.precision;
  if (precision.empty())
    precision =
        trained_precision == "tf32" && cfg.device == DeviceKind::cpu ? "fp32" : trained_precision;
  cfg.precision = parse_precision(precision);
  cfg.threads = o.threads > 0 ? o.threads : 0;
  cfg.reference = o.reference;
  cfg.deterministic = o.deterministic;
  std::unique_ptr<Backend> backend = make_backend(cfg);

  Hyper hp = w.defaults;
  hp.precision = cfg.precision;
  hp.batch = o.batch > 0 ? o.batch : c.hyper.value("batch", w.defaults.batch);
  hp.seed = c.hyper.value("seed", uint64_t(0));
  hp.threads = cpu_threads_of(cfg);
  hp.data = o.data;

  DatasetPair data = load_workload_data(w, o.data);
  Model model = build_workload_model(w, data.train);
  if (weights) c = read_torch_weights(*weights, model, w.name);
  // The test pass reads the test slot; a test-only executor never uploads the training slot.
  if (o.split == "train") std::swap(data.test, data.train);
  Executor ex(model, *backend, hp, w, data, ExecutorUse::test_only);
  load_model(ex, c, o.checkpoint);
  release_arrays(c);  // on the device now; the header stays for the record
  const EvalResult r = ex.evaluate();
  if (!o.logits.empty()) write_test_logits(ex, o.logits);

  const std::string place = weights ? "weights only (safetensors)" : checkpoint_place(c);
  if (weights)
    fmt::print("{}: {} weights (safetensors, {} tensors)\n", o.checkpoint, w.name,
               weights->tensors().size());
  else
    fmt::print("{}: {} {}, trained in {} on {} (batch {}, seed {})\n", o.checkpoint, w.name, place,
               trained_precision, c.device, c.hyper.value("batch", 0), hp.seed);
  fmt::print(
      "{} set on {} ({}, {}): {} images, accuracy {:.4f}, loss {:.4f} ({:.2f}s with first-use "
      "setup, {:.0f} images/s)\n",
      o.split, o.device, backend->name, precision, r.images, r.accuracy, r.loss, r.seconds,
      r.seconds > 0 ? r.images / r.seconds : 0.0);
  if (o.out.empty()) return 0;
  EvaluationFacts f;
  f.checkpoint_path = o.checkpoint, f.checkpoint = &c, f.stands = place;
  f.device = device_facts(cfg, *backend, hp.threads, {});
  f.backend = backend->name, f.precision = precision, f.split = o.split;
  f.threads = hp.threads, f.batch = hp.batch, f.deterministic = o.deterministic;
  f.result = r;
  write_json_atomic(o.out, make_evaluation_record(w, f));
  fmt::print("record: {}\n", o.out);
  return 0;
}

}  // namespace tb
