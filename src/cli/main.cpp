// trainbench: train the workloads of WORKLOADS.md on this machine's CPU or GPU and measure how
// well the software uses the hardware. See README.md for the commands.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "core/error.h"
#include "core/version.h"

// A number in [lo, hi]. CLI::Range alone lets "nan" through (every comparison with NaN is false),
// and a NaN learning rate would train to NaN without a word.
static CLI::Validator finite_in(double lo, double hi) {
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

int main(int argc, char** argv) {
  using namespace tb;
  CLI::App app{"trainbench: how fast does this machine train, and is the software using it?"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(TRAINBENCH_VERSION) + " (" + git_revision() + ")");

  RunOptions run;
  auto* run_cmd = app.add_subcommand("run", "Train a workload and write its result record");
  run_cmd->add_option("workload", run.workload, "fashion-mlp | resnet50-cifar10")->required();
  run_cmd->add_option("--device", run.device, "cpu | cuda | cuda:N")->capture_default_str();
  run_cmd->add_option("--precision", run.precision, "fp32 | tf32 | bf16")
      ->check(CLI::IsMember({"fp32", "tf32", "bf16"}))
      ->capture_default_str();
  int epochs = -1, batch = -1, threads = -1;
  int64_t steps = -1;
  double lr = -1;
  uint64_t seed = 0;
  std::string optimizer;
  double momentum = -1, weight_decay = -1;
  bool nesterov = false, augment = false;
  std::string data;
  run_cmd->add_option("--epochs", epochs, "epochs (workload default)")
      ->check(CLI::Range(1, 100000));
  run_cmd->add_option("--batch", batch, "batch size (workload default)")
      ->check(CLI::Range(1, 1 << 20));
  run_cmd->add_option("--lr", lr, "learning rate")->check(finite_in(1e-12, 1e3));
  run_cmd->add_option("--threads", threads, "CPU threads (default: all usable cores)")
      ->check(CLI::Range(1, 4096));
  run_cmd->add_option("--seed", seed, "random seed (init, shuffle, augmentation)");
  run_cmd->add_option("--data", data, "data set path (default: the workload's location)");
  run_cmd->add_option("--steps", steps, "stop after N training steps (quick timing)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  run_cmd->add_flag("--augment", augment, "pad-4 random crop + horizontal flip");
  run_cmd->add_option("--optimizer", optimizer, "adam | sgd")
      ->check(CLI::IsMember({"adam", "sgd"}));
  run_cmd->add_option("--momentum", momentum, "SGD momentum")->check(finite_in(0, 1));
  run_cmd->add_flag("--nesterov", nesterov, "SGD with Nesterov momentum");
  run_cmd->add_option("--weight-decay", weight_decay, "L2 weight decay")->check(finite_in(0, 1));
  run_cmd->add_option("--out", run.out, "result record path (default results/<workload>-...json)");
  run_cmd->add_flag("--quiet", run.quiet, "no progress output");
  run_cmd->add_option("--repeat", run.repeat, "run N times; record median and spread of each time")
      ->check(CLI::Range(1, 1000));
  run_cmd->add_flag("--reference", run.reference, "use the plain-loop reference backend (slow)");
  run_cmd->add_flag("--deterministic", run.deterministic,
                    "no algorithm chosen by timing: the same seed gives the same numbers");
  run_cmd->add_flag("!--no-peak", run.measure_peak, "skip the measured-GEMM peak");
  run_cmd->add_option(
      "--checkpoint", run.checkpoint,
      "after each epoch and where training stops inside one (Ctrl-C, --steps), write the "
      "run's state to this file (replacing it whole)");
  run_cmd->add_option(
      "--resume", run.resume,
      "go on from a checkpoint where it stopped: its steps count as done, --epochs is "
      "the total; same workload, batch, seed and optimizer settings");
  run_cmd
      ->add_option("--checkpoint-every", run.checkpoint_minutes,
                   "with --checkpoint, also write it inside an epoch once this many minutes have "
                   "passed since the last (long CPU epochs)")
      ->check(finite_in(0.001, 1e6));
  run_cmd->add_option("--init", run.init,
                      "start from these weights instead of the seed's: a .safetensors file in "
                      "PyTorch's names (trainbench export, or PyTorch's own)");
  add_cuda_path_flags(run_cmd, run.paths);

  bool measure = true;
  auto* devices_cmd = app.add_subcommand("devices", "List devices, their peaks and the backends");
  devices_cmd->add_flag("!--no-measure", measure, "skip the measured GEMM peaks");

  std::string data_from, data_to;
  auto* data_cmd = app.add_subcommand(
      "data",
      "Convert CIFAR-10 (image folders, or a .tar.gz of them) into the official binary layout");
  data_cmd->add_option("source", data_from, "image-folder root, .tar.gz, or binary folder")
      ->required();
  data_cmd->add_option("out_dir", data_to, "where data_batch_1..5.bin and test_batch.bin go")
      ->required();

  CompareCommandOptions compare_opt;
  auto* compare_cmd = add_compare_command(app, compare_opt);
  ProfileCommandOptions profile_opt;
  auto* profile_cmd = add_profile_command(app, profile_opt);
  EvaluateCommandOptions evaluate_opt;
  auto* evaluate_cmd = add_evaluate_command(app, evaluate_opt);
  ExportCommandOptions export_opt;
  auto* export_cmd = add_export_command(app, export_opt);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "trainbench: %s\n", e.what());
    return 2;
  }

  try {
    if (*run_cmd) {
      const Workload& w = find_workload(run.workload);
      run.hp = w.defaults;
      if (epochs > 0) run.hp.epochs = epochs;
      if (batch > 0) run.hp.batch = batch;
      if (threads > 0) run.hp.threads = threads;
      if (steps > 0) run.hp.steps = steps;
      if (!optimizer.empty()) run.hp.optimizer = optimizer;
      if (lr > 0) run.hp.adam.lr = run.hp.sgd.lr = float(lr);
      if (momentum >= 0) run.hp.sgd.momentum = float(momentum);
      if (weight_decay >= 0)
        run.hp.adam.weight_decay = run.hp.sgd.weight_decay = float(weight_decay);
      run.hp.sgd.nesterov = nesterov;
      TB_CHECK(!nesterov || run.hp.optimizer == "sgd", "--nesterov needs --optimizer sgd");
      run.hp.seed = seed;
      run.hp.augment = augment;
      run.hp.data = data;
      return run_command(run);
    }
    if (*devices_cmd) return devices_command(measure);
    if (*data_cmd) return data_command(data_from, data_to);
    if (*compare_cmd) return compare_command(compare_opt);
    if (*profile_cmd) return profile_command(profile_opt);
    if (*evaluate_cmd) return evaluate_command(evaluate_opt);
    if (*export_cmd) return export_command(export_opt);
  } catch (const tb::Error& e) {
    std::fprintf(stderr, "trainbench: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "trainbench: error: out of host memory (try a smaller --batch)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "trainbench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
