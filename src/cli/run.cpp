// `trainbench run WORKLOAD`: load, train, test, write the record, print a summary.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <optional>

#include <unistd.h>

#include "bench/device_facts.h"
#include "bench/machine.h"
#include "bench/sampler.h"
#include "cli/commands.h"
#include "cli/stop_on_signal.h"
#include "comm/comm.h"
#include "core/error.h"
#include "models/cost.h"
#include "report/progress.h"
#include "report/record.h"
#include "report/summary.h"
#include "train/checkpoint_file.h"
#include "train/executor.h"
#include "train/runner.h"
#include "train/torch_weights.h"

namespace tb {

CLI::App* add_run_command(CLI::App& app, RunOptions& o) {
  auto* cmd = app.add_subcommand("run", "Train a workload and write its result record");
  cmd->add_option("workload", o.workload, "fashion-mlp | resnet50-cifar10")->required();
  cmd->add_option("--device", o.device, "cpu | cuda[:N] | vulkan[:N]")->capture_default_str();
  cmd->add_option("--precision", o.precision, "fp32 | tf32 | bf16")
      ->check(CLI::IsMember({"fp32", "tf32", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--epochs", o.epochs, "epochs (workload default)")->check(CLI::Range(1, 100000));
  cmd->add_option("--batch", o.batch, "batch size (workload default)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--lr", o.lr, "learning rate")->check(finite_in(1e-12, 1e3));
  cmd->add_option("--threads", o.threads, "CPU threads (default: all usable cores)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--seed", o.seed, "random seed (init, shuffle, augmentation)");
  cmd->add_option("--data", o.data, "data set path (default: the workload's location)");
  cmd->add_option("--steps", o.steps, "stop after N training steps (quick timing)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  cmd->add_flag("--augment", o.augment, "pad-4 random crop + horizontal flip");
  cmd->add_option("--optimizer", o.optimizer, "adam | sgd")->check(CLI::IsMember({"adam", "sgd"}));
  cmd->add_option("--momentum", o.momentum, "SGD momentum")->check(finite_in(0, 1));
  cmd->add_flag("--nesterov", o.nesterov, "SGD with Nesterov momentum");
  cmd->add_option("--weight-decay", o.weight_decay, "L2 weight decay")->check(finite_in(0, 1));
  cmd->add_option("--out", o.out, "result record path (default results/<workload>-...json)");
  cmd->add_flag("--quiet", o.quiet, "no progress output");
  cmd->add_option("--repeat", o.repeat, "run N times; record median and spread of each time")
      ->check(CLI::Range(1, 1000));
  cmd->add_flag("--reference", o.reference, "use the plain-loop reference backend (slow)");
  cmd->add_flag("--deterministic", o.deterministic,
                "no algorithm chosen by timing: the same seed gives the same numbers");
  cmd->add_flag("!--no-peak", o.measure_peak, "skip the measured-GEMM peak");
  cmd->add_option(
      "--checkpoint", o.checkpoint,
      "after each epoch and where training stops inside one (Ctrl-C, --steps), write the "
      "run's state to this file (replacing it whole)");
  cmd->add_option("--resume", o.resume,
                  "go on from a checkpoint where it stopped: its steps count as done, --epochs is "
                  "the total; same workload, batch, seed and optimizer settings");
  cmd->add_option("--checkpoint-every", o.checkpoint_minutes,
                  "with --checkpoint, also write it inside an epoch once this many minutes have "
                  "passed since the last (long CPU epochs)")
      ->check(finite_in(0.001, 1e6));
  cmd->add_option("--init", o.init,
                  "start from these weights instead of the seed's: a .safetensors file in "
                  "PyTorch's names (trainbench export, or PyTorch's own)");
  cmd->add_option("--bucket-mb", o.bucket_mb,
                  "under mpirun: gradients go to the allreduce in buckets of this many MB as "
                  "backward finishes them (0: one allreduce after backward)")
      ->check(finite_in(0, 1e4))
      ->capture_default_str();
  add_cuda_path_flags(cmd, o.paths);
  return cmd;
}

namespace {

// The workload's hyper-parameters with the options given on top.
Hyper hyper_of(const RunOptions& o, const Workload& w) {
  Hyper hp = w.defaults;
  if (o.epochs > 0) hp.epochs = o.epochs;
  if (o.batch > 0) hp.batch = o.batch;
  if (o.threads > 0) hp.threads = o.threads;
  if (o.steps > 0) hp.steps = o.steps;
  if (!o.optimizer.empty()) hp.optimizer = o.optimizer;
  if (o.lr > 0) hp.adam.lr = hp.sgd.lr = float(o.lr);
  if (o.momentum >= 0) hp.sgd.momentum = float(o.momentum);
  if (o.weight_decay >= 0) hp.adam.weight_decay = hp.sgd.weight_decay = float(o.weight_decay);
  hp.sgd.nesterov = o.nesterov;
  TB_CHECK(!o.nesterov || hp.optimizer == "sgd", "--nesterov needs --optimizer sgd");
  hp.seed = o.seed;
  hp.augment = o.augment;
  hp.data = o.data;
  return hp;
}

std::string default_out_path(const RunOptions& o) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&now));
  std::string dev = o.device;
  for (char& c : dev)
    if (c == ':') c = '-';
  return fmt::format("results/{}-{}-{}-{}.json", o.workload, dev, o.precision, stamp);
}

// The record is the run's result: where its path cannot be written (full disk, a folder that is
// not there), it goes to the temp folder and the run still fails at the end, saying where. Where
// that fails too, the summary printed after it is what is left of the run.
std::string write_record(const std::string& path, const nlohmann::json& record) {
  try {
    write_json_atomic(path, record);
    return "";
  } catch (const Error& e) {
    const std::string fallback =
        (std::filesystem::temp_directory_path() / std::filesystem::path(path).filename()).string();
    try {
      write_json_atomic(fallback, record);
    } catch (const Error& again) {
      return fmt::format(
          "{}; nor in the temp folder ({}): the record is lost, the summary above "
          "holds its figures",
          e.what(), again.what());
    }
    return fmt::format("{}; the record went to {} instead", e.what(), fallback);
  }
}

// Threads of a CPU rank: the node's cores shared among its ranks, within what the launcher bound
// it to. Open MPI binds each of two ranks to one core by default, whatever else is free.
int rank_threads(const Comm& comm, bool speaks) {
  const int bound = cpu_threads_available();
  const int online = int(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  const int share = std::max(1, online / comm.local_size());
  if (bound < share && speaks)
    fmt::print(stderr,
               "trainbench: warning: rank 0 may use {} of the {} cores its share of this node "
               "would give it: mpirun bound it (add --bind-to none, or --map-by slot:PE={})\n",
               bound, share, share);
  return std::min(bound, share);
}

// What every rank must share to train the same model on the same batches.
std::vector<std::pair<std::string, std::string>> rank_settings(const RunOptions& o, Hyper hp,
                                                               const DatasetPair& data) {
  hp.threads = 0;   // each rank's own
  hp.data.clear();  // the path may differ between nodes; the contents may not
  std::vector<std::pair<std::string, std::string>> s;
  const nlohmann::json hyper = hyper_json(hp);
  for (const auto& [key, value] : hyper.items()) s.emplace_back(key, value.dump());
  // The data by its size and a hash of its labels and of its first and last images.
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  auto hash = [&h](const std::vector<uint8_t>& v, size_t from, size_t to) {
    for (size_t i = from; i < std::min(to, v.size()); ++i) h = (h ^ v[i]) * 1099511628211ull;
  };
  for (const Dataset* d : {&data.train, &data.test}) {
    hash(d->labels, 0, d->labels.size());
    hash(d->images, 0, 1 << 16);
    hash(d->images, d->images.size() - std::min<size_t>(d->images.size(), 1 << 16),
         d->images.size());
  }
  s.emplace_back(
      "data", fmt::format("of {}+{} images (hash {:016x})", data.train.count, data.test.count, h));
  s.emplace_back("--device", o.device);
  s.emplace_back("--deterministic", o.deterministic ? "on" : "off");
  s.emplace_back("--reference", o.reference ? "on" : "off");
  s.emplace_back("--resume", o.resume.empty() ? "(none)" : o.resume);
  s.emplace_back("--init", o.init.empty() ? "(none)" : o.init);
  s.emplace_back("--bucket-mb", fmt::format("{}", o.bucket_mb));
  return s;
}

}  // namespace

int run_command(const RunOptions& o) {
  StopOnSignal stop;  // first: before any thread starts (MPI's included)
  // Under mpirun: one rank of a data-parallel run; otherwise null, and MPI stays untouched.
  const std::unique_ptr<Comm> comm = make_comm();
  if (!comm || comm->size() == 1) return run_workload(o, stop, comm.get()).status;
  try {
    return run_workload(o, stop, comm.get()).status;
  } catch (const RanksDisagree& e) {
    if (e.what()[0]) fmt::print(stderr, "trainbench: error: {}\n", e.what());
    return 1;  // every rank knows: they end together
  } catch (const std::exception& e) {
    comm->abort(e.what());  // the other ranks would wait for this one forever
  }
}

RunOutcome run_workload(const RunOptions& o, StopOnSignal& stop, Comm* comm) {
  using Clock = std::chrono::steady_clock;
  const bool speaks = !comm || comm->rank() == 0;  // other ranks print errors only
  const Workload& w = find_workload(o.workload);
  Hyper hp = hyper_of(o, w);
  BackendConfig cfg;
  parse_device(o.device, &cfg.device, &cfg.device_index);
  TB_CHECK(!comm || o.repeat == 1, "--repeat: one run at a time under mpirun");
  TB_CHECK(!comm || cfg.device != DeviceKind::vulkan,
           "under mpirun: CPU or CUDA ranks (Vulkan has no collective here)");
  // One GPU a rank: the node's ranks take its GPUs in order, from the one --device names.
  if (comm && cfg.device == DeviceKind::cuda) cfg.device_index += comm->local_rank();
  if (comm && o.threads <= 0 && cfg.device == DeviceKind::cpu)
    hp.threads = rank_threads(*comm, speaks);
  cfg.precision = hp.precision = parse_precision(o.precision);
  cfg.threads = hp.threads;
  cfg.reference = o.reference;
  cfg.deterministic = o.deterministic;
  apply_cuda_paths(o.paths, cfg);
  // The device first: a missing GPU fails before minutes of data loading.
  std::unique_ptr<Backend> backend = make_backend(cfg);
  hp.threads = cpu_threads_of(cfg);
  // CUDA ranks sum gradients through NCCL on the backend's stream; the rest stays on MPI.
  std::unique_ptr<Comm> gpu_comm;
  if (comm && cfg.device == DeviceKind::cuda) {
    gpu_comm = make_nccl_comm(*comm, backend->native_stream(backend->ctx));
    comm = gpu_comm.get();
  }
  const std::string out_path = o.out.empty() ? default_out_path(o) : o.out;
  const bool quiet = o.quiet || !speaks;
  TB_CHECK(o.repeat == 1 || (o.checkpoint.empty() && o.resume.empty()),
           "--checkpoint and --resume take one run, not --repeat");
  // A checkpoint that cannot be resumed or written fails before the data loads.
  CheckpointFile checkpoint(o.checkpoint, o.resume, o.checkpoint_minutes, hp);
  CheckpointPlan checkpoints = checkpoint.plan();
  // Every rank takes part in a checkpoint (the sums are all ranks'); rank 0 writes it.
  if (!speaks && checkpoints.write) checkpoints.write = [](const Checkpoint&) { return true; };
  // --init: the file's header and workload before the data loads, its tensors once the data
  // has given the model its shape.
  std::optional<SafeTensorsReader> init;
  if (!o.init.empty()) {
    TB_CHECK(o.resume.empty(), "--init and --resume: a resumed run goes on with its own weights");
    TB_CHECK(is_safetensors_path(o.init), "--init {}: not a .safetensors file", o.init);
    safetensors_workload(init.emplace(o.init), w.name);
  }

  RunFacts facts;
  facts.config = cfg;
  facts.backend = backend->name;
  facts.device = device_facts(cfg, *backend, hp.threads, {o.measure_peak, false});
  facts.machine = machine_json();
  facts.checkpoint_path = o.checkpoint, facts.checkpoint_minutes = o.checkpoint_minutes;
  facts.resumed = checkpoint.resumed(), facts.resumed_path = o.resume;
  if (init) facts.init_path = o.init, facts.init_metadata = init->metadata();

  SamplerOptions sampler_opt;
  if (cfg.device == DeviceKind::cuda) sampler_opt.gpu_index = cfg.device_index;
  Sampler sampler(sampler_opt);
  sampler.set_phase("load");
  const auto t_load = Clock::now();
  DatasetPair data = load_workload_data(w, hp.data);
  facts.load_seconds = std::chrono::duration<double>(Clock::now() - t_load).count();
  if (comm) agree_settings(*comm, rank_settings(o, hp, data));
  DataParallel dp{comm, int64_t(o.bucket_mb * 1e6)};
  facts.train_images = data.train.count, facts.test_images = data.test.count;
  if (o.test_images > 0 && o.test_images < data.test.count)
    data.test = evenly_spaced(data.test, o.test_images);

  Model model = build_workload_model(w, data.train);
  facts.train_flops_per_image = train_flops_per_image(model);
  std::optional<Checkpoint> init_weights;
  if (init) init_weights = read_torch_weights(*init, model, w.name);
  if (!quiet)
    fmt::print(
        "{} on {} ({}, {}): {} train / {} test images, {} parameters, {} multiply-adds per "
        "image forward ({:.1f} MFLOP per training image), batch {}, {} epochs\n",
        w.name, o.device, backend->name, o.precision, data.train.count, data.test.count,
        model.param_count, model.macs_per_image(), facts.train_flops_per_image / 1e6, hp.batch,
        hp.epochs);
  std::fflush(stdout);  // training starts now: a log read through a pipe (mpirun's) says so

  ProgressPrinter printer(stdout);
  std::function<void(const Progress&)> progress;
  if (!quiet) progress = [&printer](const Progress& p) { printer(p); };
  // --repeat N: N runs from the same seed, each with fresh parameters; the record keeps the last
  // run in full and every run's times, with median and spread.
  RepeatTimes& rep = facts.repeats;
  stop.armed.store(true);
  for (int r = 0; r < o.repeat && !stop.raised.load(); ++r) {
    if (o.repeat > 1 && !quiet) fmt::print("run {}/{}\n", r + 1, o.repeat);
    Executor ex(model, *backend, hp, w, data, ExecutorUse::train, dp);
    if (init_weights) load_model(ex, *init_weights, o.init);
    sampler.set_phase("train");
    TrainResult trained = train(ex, progress, checkpoints, &stop.raised);
    // Restored on the device: only its header is needed.
    if (Checkpoint* c = checkpoint.resumed()) release_arrays(*c);
    if (trained.interrupted && trained.steps == 0) {
      if (r > 0) break;  // between repeats: the record keeps the whole runs before
      if (speaks)
        fmt::print(stderr, "trainbench: interrupted before the first training step; no record\n");
      return {nullptr, "", 130};
    }
    facts.train = std::move(trained);
    facts.exchange = ex.exchange_stats();
    if (!speaks) continue;  // rank 0 tests and writes the record
    if (facts.train.interrupted && !quiet)
      fmt::print("\ninterrupted after {} steps: testing the model as it stands (again to quit)\n",
                 facts.train.steps);
    sampler.set_phase("test");
    // A diverged model's accuracy means nothing: no test pass (the record's test figures are
    // null).
    if (facts.train.diverged)
      facts.test.accuracy = facts.test.loss = std::nan("");
    else
      facts.test = ex.evaluate();
    facts.step_graphs = ex.graph_summary();
    facts.fused_mlp_step = ex.fused_mlp_taken();
    facts.activations = ex.plan().layout;
    facts.bf16_maps = int(std::count(ex.plan().out_bf16.begin(), ex.plan().out_bf16.end(), 1));
    facts.algorithms = nlohmann::json::object();
    const std::vector<std::string> notes = ex.node_notes();
    for (size_t i = 0; i < notes.size(); ++i)
      if (!notes[i].empty()) facts.algorithms[model.nodes[i].name] = notes[i];
    if (facts.train.interrupted || facts.train.diverged) break;  // spreads take whole runs
    rep.train_s.push_back(facts.train.train_seconds);
    rep.test_s.push_back(facts.test.seconds);
    rep.train_test_s.push_back(facts.train.train_seconds + facts.test.seconds);
    rep.steady.push_back(facts.train.images_per_s_steady);
    rep.accuracy.push_back(facts.test.accuracy);
  }
  sampler.stop();
  if (!speaks) return {nullptr, "", stop.raised.load() ? 130 : 0};
  if (comm) {
    facts.ranks.world = comm->size(), facts.ranks.local = comm->local_size();
    facts.ranks.engine = comm->engine();
  }
  facts.ranks.bucket_bytes = dp.bucket_bytes;
  facts.utilisation = sampler.to_json();
  // Read once: a signal from here on is taken but changes nothing (a second one still ends the
  // process).
  facts.interrupted = stop.raised.load();  // also between repeats or in the test pass
  facts.checkpoint_failures = checkpoint.failures();

  const nlohmann::json record = make_record(w, hp, model, facts);
  const std::string record_failure = write_record(out_path, record);  // before anything prints
  // A record that did not go where asked: its figures are printed whatever the caller wanted.
  if (o.summary || !record_failure.empty()) print_run_summary(record, facts);
  if (!record_failure.empty()) fail("{}", record_failure);
  if (o.summary) fmt::print("record: {}\n", out_path);

  const TrainResult& t = facts.train;
  int status = 0;
  if (t.diverged) {
    fmt::print(stderr,
               "trainbench: error: training diverged: the loss was not finite {} step {} (epoch "
               "{}){}; the record holds the run up to there, marked diverged{}\n",
               t.diverged_step_exact ? "at" : "by", t.diverged_step, t.diverged_epoch,
               t.diverged_layer.empty()
                   ? std::string()
                   : fmt::format(", first non-finite values in {}", t.diverged_layer),
               o.checkpoint.empty() ? std::string()
                                    : fmt::format("; {} was left as it was", o.checkpoint));
    return {record, out_path, 3};
  }
  if (checkpoint.failures() > 0) {
    fmt::print(stderr, "trainbench: error: {} of {} checkpoints could not be written to {} ({})\n",
               checkpoint.failures(), checkpoint.failures() + t.checkpoints, o.checkpoint,
               checkpoint.last_error());
    status = 1;
  }
  // A whole epoch whose training accuracy is no better than guessing: the model did not learn
  // (diverged: the learning rate), so its speed stands but its accuracy means nothing. Only whole
  // epochs: a 20-step timing run is at chance by right.
  const EpochResult* last_whole = nullptr;
  for (const EpochResult& e : t.epochs)
    if (e.images == data.train.count) last_whole = &e;
  if (last_whole && model.classes > 1 && last_whole->accuracy < 1.5 / model.classes)
    fmt::print(stderr,
               "trainbench: warning: training accuracy {:.4f} after a whole epoch is chance for {} "
               "classes: the model did not learn (diverged? try a lower --lr)\n",
               last_whole->accuracy, model.classes);
  if (facts.interrupted) {
    fmt::print(stderr, "trainbench: interrupted; the record holds {}{}\n",
               t.interrupted ? fmt::format("the last run's {} training steps", t.steps)
                             : fmt::format("{} whole runs", rep.train_s.size()),
               checkpoint.stands().empty()
                   ? std::string()
                   : fmt::format("; the checkpoint stands {}: add --resume {} to go on",
                                 checkpoint.stands(), o.checkpoint));
    status = 130;
  }
  return {record, out_path, status};
}

}  // namespace tb
