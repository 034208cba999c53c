// `trainbench run WORKLOAD`: load, train, test, print a summary, write the record.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <optional>
#include <thread>

#include "backends/backend.h"
#include "bench/backend_gemm.h"
#include "bench/machine.h"
#include "bench/peaks.h"
#include "bench/sampler.h"
#include "cli/commands.h"
#include "core/error.h"
#include "report/progress.h"
#include "report/record.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#ifdef TRAINBENCH_HAVE_CUDA
#include "backends/cuda/cuda_info.h"
#endif
#ifdef TRAINBENCH_HAVE_VULKAN
#include "backends/vulkan/vulkan_info.h"
#endif

namespace tb {

void parse_device(const std::string& s, DeviceKind* kind, int* index) {
  *index = 0;
  if (s == "cpu") {
    *kind = DeviceKind::cpu;
    return;
  }
  if (s == "cuda") {
    *kind = DeviceKind::cuda;
    return;
  }
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 &&
      s.find_first_not_of("0123456789", 5) == std::string::npos && s.size() < 9) {
    *kind = DeviceKind::cuda;
    *index = std::stoi(s.substr(5));
    return;
  }
  if (s == "vulkan" || (s.rfind("vulkan:", 0) == 0 && s.size() > 7 && s.size() < 11 &&
                        s.find_first_not_of("0123456789", 7) == std::string::npos)) {
    *kind = DeviceKind::vulkan;
    *index = s.size() > 7 ? std::stoi(s.substr(7)) : 0;
    return;
  }
  fail("--device: '{}' is not cpu, cuda, cuda:N, vulkan or vulkan:N", s);
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
                "bf16: convert every operand at every call (no bf16 weights mirror; CUDA: no "
                "copies kept between a convolution's directions)");
  cmd->add_flag("!--no-bn-slices", p.bn_slices,
                "CUDA: batch norm one block per channel, also where few channels hold many values");
  cmd->add_flag("--nhwc", p.nhwc,
                "CUDA bf16: convolutions on channels-last (NHWC) copies, to compare layouts");
  cmd->add_flag("--fused-mlp", p.fused_mlp,
                "CUDA fp32: a one-hidden-layer MLP's step in three kernels instead of ~9 ops");
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
  cfg.graphs = p.graphs;
  cfg.reuse_bf16 = p.bf16_reuse;
  cfg.bn_slices = p.bn_slices;
  cfg.bf16_nhwc = p.nhwc;
  cfg.fused_mlp = p.fused_mlp;
}

namespace {
// SIGINT (Ctrl-C) and SIGTERM during a run. No handler runs inside the engine's threads: both
// signals are blocked in every thread from the start of the run (threads inherit the mask, and
// the run's threads, oneDNN's OpenMP pool, the sampler, CUDA's, all start after), and one watcher
// thread takes them with sigtimedwait. While `armed` (training and the test pass) the first
// signal raises `raised`: training ends after the step under way, the test pass runs on the model
// as it stands and the record is written (hours of a CPU run are not lost to one keystroke).
// Before that (loading data, measuring peaks), or for a second signal of either kind, the
// watcher ends the process as the signal's default action would. A signal ignored when the run
// began (SIGINT for a shell's background job, nohup) stays ignored.
class StopOnSignal {
 public:
  std::atomic<bool> armed{false}, raised{false};

  StopOnSignal() {
    sigemptyset(&watched_);
    for (int sig : {SIGINT, SIGTERM}) {
      struct sigaction now {};
      sigaction(sig, nullptr, &now);
      if (now.sa_handler != SIG_IGN) sigaddset(&watched_, sig);
    }
    pthread_sigmask(SIG_BLOCK, &watched_, &old_mask_);
    watcher_ = std::thread([this] { watch(); });
  }
  ~StopOnSignal() {
    quit_.store(true);
    watcher_.join();
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

 private:
  sigset_t watched_, old_mask_;
  std::atomic<bool> quit_{false};
  std::thread watcher_;

  void watch() {
    const timespec tick{0, 50'000'000};  // how soon the watcher sees the run end
    while (!quit_.load()) {
      const int sig = sigtimedwait(&watched_, nullptr, &tick);
      if (sig < 0) continue;  // the tick passed (EAGAIN) or another signal came (EINTR)
      if (armed.load() && !raised.exchange(true)) continue;
      // End the process as the signal itself would: its default action, unblocked here.
      signal(sig, SIG_DFL);
      sigset_t one;
      sigemptyset(&one);
      sigaddset(&one, sig);
      pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
      raise(sig);
    }
  }
};
}  // namespace

// Every value, its median, min, max and spread ((max - min) / median) for --repeat.
static nlohmann::json spread_json(std::vector<double> v) {
  nlohmann::json j = {{"values", v}};
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  const double median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  j["median"] = median, j["min"] = v.front(), j["max"] = v.back();
  j["spread"] = median != 0 ? (v.back() - v.front()) / median : 0.0;
  return j;
}

static std::string default_out_path(const RunOptions& o) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&now));
  std::string dev = o.device;
  for (char& c : dev)
    if (c == ':') c = '-';
  return fmt::format("results/{}-{}-{}-{}.json", o.workload, dev, o.precision, stamp);
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

int run_command(RunOptions& o) {
  using Clock = std::chrono::steady_clock;
  StopOnSignal stop;  // first: before any thread starts
  BackendConfig cfg;
  parse_device(o.device, &cfg.device, &cfg.device_index);
  cfg.precision = o.hp.precision = parse_precision(o.precision);
  cfg.threads = o.hp.threads;
  cfg.reference = o.reference;
  cfg.deterministic = o.deterministic;
  apply_cuda_paths(o.paths, cfg);
  // The device first: a missing GPU fails before minutes of data loading.
  std::unique_ptr<Backend> backend = make_backend(cfg);
  if (cfg.device == DeviceKind::cpu) o.hp.threads = cpu_threads_of(cfg);
  const Workload& w = find_workload(o.workload);
  const std::string out_path = o.out.empty() ? default_out_path(o) : o.out;
  TB_CHECK(o.repeat == 1 || (o.checkpoint.empty() && o.resume.empty()),
           "--checkpoint and --resume take one run, not --repeat");
  TB_CHECK(o.checkpoint_minutes == 0 || !o.checkpoint.empty(),
           "--checkpoint-every needs --checkpoint FILE (where to write)");
  // A run that does not go on from the file would replace it at its first checkpoint: maybe
  // hours of an earlier run (the same command again, --resume forgotten), maybe no checkpoint.
  if (!o.checkpoint.empty() && std::filesystem::exists(o.checkpoint)) {
    std::error_code ec;
    TB_CHECK(!o.resume.empty() && std::filesystem::equivalent(o.checkpoint, o.resume, ec),
             "--checkpoint {0}: the file exists; add --resume {0} to go on from it, or remove it "
             "to start over",
             o.checkpoint);
  }
  // A checkpoint that cannot be resumed fails before the data loads.
  std::optional<Checkpoint> resume;
  if (!o.resume.empty()) {
    resume = read_checkpoint(o.resume);
    check_resumable(*resume, o.resume, o.hp);
  }
  CheckpointPlan checkpoints;
  if (resume) checkpoints.resume = &*resume, checkpoints.resume_path = o.resume;
  // A checkpoint that cannot be written (full disk) ends neither the run nor the previous
  // checkpoint (written whole or not at all): a warning now, a non-zero exit at the end.
  int64_t checkpoint_failures = 0;
  std::string last_checkpoint_error;
  checkpoints.every_s = 60 * o.checkpoint_minutes;
  std::string checkpoint_stands;  // where the last written checkpoint stands ("" for none)
  if (!o.checkpoint.empty())
    checkpoints.write = [&](const Checkpoint& c) {
      try {
        write_checkpoint(o.checkpoint, c);
        checkpoint_stands = checkpoint_place(c);
        return true;
      } catch (const Error& e) {
        checkpoint_failures++, last_checkpoint_error = e.what();
        fmt::print(stderr, "trainbench: warning: checkpoint {} not written: {}\n",
                   checkpoint_place(c), e.what());
        return false;
      }
    };

  RunFacts facts;
  facts.device_kind = device_kind_name(cfg.device);
  facts.device_name = o.device;
  facts.backend = backend->name;
  facts.machine = machine_json();
  if (facts.machine.contains("versions")) facts.versions = facts.machine["versions"];
  const CpuInfo cpu = cpu_info();
  if (cfg.device == DeviceKind::cpu) {
    facts.device_name = cpu.model;
    facts.device_extra = to_json(cpu);
    if (auto p = cpu_peak_estimate(cpu, o.hp.precision, o.hp.threads))
      facts.peak_datasheet = p->flops_per_s, facts.peak_datasheet_source = p->source;
    if (o.measure_peak) {
      GemmMeasurement g = measure_cpu_gemm(o.hp.precision, o.hp.threads, 1.0);
      if (g.flops_per_s > 0 && g.native)
        facts.peak_measured = g.flops_per_s, facts.peak_measured_source = g.source;
    }
  }
#ifdef TRAINBENCH_HAVE_CUDA
  if (cfg.device == DeviceKind::cuda) {
    const CudaDeviceInfo gpu = cuda_devices().at(size_t(cfg.device_index));
    facts.device_name = gpu.name;
    facts.device_extra = {{"index", gpu.index},
                          {"memory_bytes", gpu.total_memory_bytes},
                          {"sms", gpu.sm_count},
                          {"compute_capability", gpu.compute_capability()},
                          {"driver", cuda_version_str(gpu.driver_version)},
                          {"runtime", cuda_version_str(gpu.runtime_version)},
                          {"cudnn", cudnn_version_str(gpu.cudnn_version)},
                          {"nccl", nccl_version_str(gpu.nccl_version)}};
    if (auto p = gpu_peak(gpu.name, o.hp.precision))
      facts.peak_datasheet = p->flops_per_s, facts.peak_datasheet_source = p->source;
    if (o.measure_peak) {
      const GemmMeasurement g = measure_backend_gemm(*backend, 8192, 1.0);
      facts.peak_measured = g.flops_per_s, facts.peak_measured_source = g.source;
    }
  }
#endif

#ifdef TRAINBENCH_HAVE_VULKAN
  if (cfg.device == DeviceKind::vulkan) {
    const VulkanDeviceInfo gpu = vulkan_devices().at(size_t(cfg.device_index));
    facts.device_name = gpu.name;
    facts.device_extra = {{"index", gpu.index},
                          {"type", gpu.type},
                          {"driver", gpu.driver},
                          {"api", gpu.api_version},
                          {"memory_bytes", gpu.memory_bytes},
                          {"unified_memory", gpu.unified},
                          {"subgroup_size", gpu.subgroup_size}};
    if (auto p = vulkan_fp32_peak(gpu.name))
      facts.peak_datasheet = p->flops_per_s, facts.peak_datasheet_source = p->source;
    if (o.measure_peak) {  // a CPU driver (lavapipe) runs 4096^3 in minutes, not seconds
      const GemmMeasurement g = measure_backend_gemm(*backend, gpu.type == "cpu" ? 512 : 4096, 1.0);
      facts.peak_measured = g.flops_per_s, facts.peak_measured_source = g.source;
    }
  }
#endif

  SamplerOptions sampler_opt;
  if (cfg.device == DeviceKind::cuda) sampler_opt.gpu_index = cfg.device_index;
  Sampler sampler(sampler_opt);
  sampler.set_phase("load");
  const auto t_load = Clock::now();
  DatasetPair data = load_workload_data(w, o.hp.data);
  const double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();

  Model model = build_workload_model(w, data.train);
  if (!o.quiet)
    fmt::print(
        "{} on {} ({}, {}): {} train / {} test images, {} parameters, {} multiply-adds per "
        "image forward ({:.1f} MFLOP per training image), batch {}, {} epochs\n",
        w.name, o.device, backend->name, o.precision, data.train.count, data.test.count,
        model.param_count, model.macs_per_image(), train_flops_per_image(model) / 1e6, o.hp.batch,
        o.hp.epochs);

  ProgressPrinter printer(stdout);
  std::function<void(const Progress&)> progress;
  if (!o.quiet) progress = [&printer](const Progress& p) { printer(p); };
  // --repeat N: N runs from the same seed, each with fresh parameters; the record keeps the last
  // run in full and every run's times, with median and spread.
  std::vector<double> train_s, test_s, train_test_s, steady, accuracy;
  std::string step_graphs;
  bool fused_mlp_step = false;  // --fused-mlp was taken (the backend may decline a shape)
  stop.armed.store(true);
  for (int r = 0; r < o.repeat && !stop.raised.load(); ++r) {
    if (o.repeat > 1 && !o.quiet) fmt::print("run {}/{}\n", r + 1, o.repeat);
    Trainer trainer(model, *backend, o.hp, w, data);
    sampler.set_phase("train");
    TrainResult trained = trainer.train(progress, checkpoints, &stop.raised);
    if (resume) release_arrays(*resume);  // restored on the device: only its header is needed
    if (trained.interrupted && trained.steps == 0) {
      if (r > 0) break;  // between repeats: the record keeps the whole runs before
      fmt::print(stderr, "trainbench: interrupted before the first training step; no record\n");
      return 130;
    }
    facts.train = std::move(trained);
    if (facts.train.interrupted && !o.quiet)
      fmt::print("\ninterrupted after {} steps: testing the model as it stands (again to quit)\n",
                 facts.train.steps);
    sampler.set_phase("test");
    facts.test = trainer.evaluate();
    step_graphs = trainer.graph_summary();
    fused_mlp_step = trainer.fused_issues > 0;
    facts.algorithms = nlohmann::json::object();
    const std::vector<std::string> notes = trainer.node_notes();
    for (size_t i = 0; i < notes.size(); ++i)
      if (!notes[i].empty()) facts.algorithms[model.nodes[i].name] = notes[i];
    if (facts.train.interrupted) break;  // the repeats' spreads take whole runs only
    train_s.push_back(facts.train.train_seconds);
    test_s.push_back(facts.test.seconds);
    train_test_s.push_back(facts.train.train_seconds + facts.test.seconds);
    steady.push_back(facts.train.images_per_s_steady);
    accuracy.push_back(facts.test.accuracy);
  }
  sampler.stop();
  facts.utilisation = sampler.to_json();
  facts.load_seconds = load_s;
  facts.train_flops_per_image = train_flops_per_image(model);

  nlohmann::json record = make_record(w, o.hp, model, facts);
  // Read once: a signal from here on is taken but changes nothing (a second one still ends the
  // process).
  const bool interrupted = stop.raised.load();  // also between repeats or in the test pass
  record["interrupted"] = interrupted;
  record["deterministic"] = o.deterministic;
  record["step_graphs"] = step_graphs;
  record["conv_layout"] = o.paths.nhwc ? "nhwc" : "nchw";
  record["fused_mlp_step"] = fused_mlp_step;
  if (!o.checkpoint.empty())
    record["checkpoint"] = {{"path", o.checkpoint},
                            {"every_minutes", o.checkpoint_minutes},
                            {"written", facts.train.checkpoints},
                            {"failed", checkpoint_failures}};
  if (resume)
    record["resumed_from"] = {{"path", o.resume},
                              {"epochs", resume->epochs_done},
                              {"steps_into_epoch", resume->epoch_so_far.steps},
                              {"written_by", resume->device}};
  if (cfg.device == DeviceKind::cuda)
    record["cuda_paths"] = {{"graphs", o.paths.graphs},
                            {"bf16_reuse", o.paths.bf16_reuse},
                            {"bn_slices", o.paths.bn_slices},
                            {"nhwc", o.paths.nhwc},
                            {"fused_mlp", o.paths.fused_mlp}};
  if (train_s.size() > 1) {
    record["repeats"] = {{"count", train_s.size()},
                         {"train_s", spread_json(train_s)},
                         {"test_s", spread_json(test_s)},
                         {"train_test_s", spread_json(train_test_s)},
                         {"train_images_per_s_steady", spread_json(steady)},
                         {"test_accuracy", spread_json(accuracy)}};
  }
  // The record is the run's result, written before anything is printed: where its path cannot
  // be written (full disk, a folder that is not there), it goes to the temp folder and the run
  // still fails at the end, saying where.
  std::string record_failure;
  try {
    write_json_atomic(out_path, record);
  } catch (const Error& e) {
    const std::string fallback =
        (std::filesystem::temp_directory_path() / std::filesystem::path(out_path).filename())
            .string();
    write_json_atomic(fallback, record);
    record_failure = fmt::format("{}; the record went to {} instead", e.what(), fallback);
  }

  const TrainResult& t = facts.train;
  const nlohmann::json& fl = record["flops"];
  auto mfu_text = [](const nlohmann::json& mfu, const std::optional<double>& peak,
                     const std::string& source) {
    if (mfu.is_null() || !peak) return std::string("unknown");
    return fmt::format("{:.1f}% of {:.0f} GFLOP/s ({})", 100 * mfu.get<double>(), *peak / 1e9,
                       source);
  };
  fmt::print("train {:.2f}s, test {:.2f}s, train+test {:.2f}s (load {:.2f}s)\n", t.train_seconds,
             facts.test.seconds, t.train_seconds + facts.test.seconds, load_s);
  if (resume)
    fmt::print(
        "resumed {} from {} (written by {}); its {:.2f}s of training are not in the times "
        "above\n",
        checkpoint_place(*resume), o.resume, resume->device,
        record["times_s"]["train_before_resume"].get<double>());
  if (t.checkpoints > 0)
    fmt::print("checkpoint: {} ({} written, {:.2f}s, not in the times above)\n", o.checkpoint,
               t.checkpoints, t.checkpoint_seconds);
  fmt::print("throughput {:.0f} images/s ({:.0f} steady), test accuracy {:.4f}, test loss {:.4f}\n",
             t.images_per_s, t.images_per_s_steady, facts.test.accuracy, facts.test.loss);
  fmt::print("achieved {:.1f} GFLOP/s; MFU {}; measured-peak MFU {}\n",
             fl["achieved_per_s"].get<double>() / 1e9,
             mfu_text(fl["mfu"], facts.peak_datasheet, facts.peak_datasheet_source),
             mfu_text(fl["mfu_measured"], facts.peak_measured, facts.peak_measured_source));
  const nlohmann::json& mean = facts.utilisation["mean"];
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
        "{:.3f}, optimizer {:.3f}\n",
        t.split.samples, t.split.data_ms, t.split.forward_ms, t.split.loss_ms, t.split.backward_ms,
        t.split.optimizer_ms);
  if (t.split.host_samples > 0)
    fmt::print("host issues a step in {:.3f} ms of its {:.3f} ({} sampled steps)\n",
               t.split.host_ms, t.split.whole_ms, t.split.host_samples);
  if (cfg.device == DeviceKind::cuda) fmt::print("step graphs: {}\n", step_graphs);
  if (o.paths.fused_mlp)
    fmt::print("fused MLP step: {}\n",
               fused_mlp_step ? "taken" : "declined (this model or batch does not fit it)");
  if (t.split.samples == 0 || t.split.host_samples == 0)
    fmt::print("step split: not sampled (too few steps)\n");
  if (record.contains("repeats")) {
    const nlohmann::json& tt = record["repeats"]["train_test_s"];
    fmt::print("{} runs: train+test median {:.2f}s (min {:.2f}s, max {:.2f}s, spread {:.1f}%)\n",
               train_s.size(), tt["median"].get<double>(), tt["min"].get<double>(),
               tt["max"].get<double>(), 100 * tt["spread"].get<double>());
  }
  if (!record_failure.empty()) fail("{}", record_failure);
  fmt::print("record: {}\n", out_path);
  int status = 0;
  if (checkpoint_failures > 0) {
    fmt::print(stderr, "trainbench: {} of {} checkpoints could not be written to {} ({})\n",
               checkpoint_failures, checkpoint_failures + t.checkpoints, o.checkpoint,
               last_checkpoint_error);
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
  if (interrupted) {
    fmt::print(stderr, "trainbench: interrupted; the record holds {}{}\n",
               t.interrupted ? fmt::format("the last run's {} training steps", t.steps)
                             : fmt::format("{} whole runs", train_s.size()),
               checkpoint_stands.empty()
                   ? std::string()
                   : fmt::format("; the checkpoint stands {}: add --resume {} to go on",
                                 checkpoint_stands, o.checkpoint));
    status = 130;
  }
  return status;
}

int devices_command(bool measure) {
  const CpuInfo cpu = cpu_info();
  fmt::print(
      "CPU: {} ({} usable of {} logical CPUs, {} physical cores), oneDNN ISA {}, max {:.0f} "
      "MHz\n",
      cpu.model, cpu.usable_cpus, cpu.logical_cpus, cpu.physical_cores, cpu.isa, cpu.max_mhz);
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    auto est = cpu_peak_estimate(cpu, p);
    fmt::print("  {} peak: {}\n", precision_name(p),
               est ? fmt::format("{:.1f} GFLOP/s ({})", est->flops_per_s / 1e9, est->source)
                   : std::string("unknown (no native support)"));
    if (measure) {
      GemmMeasurement g = measure_cpu_gemm(p, 0, 1.0);
      fmt::print("  {} measured: {:.1f} GFLOP/s ({}{})\n", precision_name(p), g.flops_per_s / 1e9,
                 g.source, g.native ? "" : "; emulated, not native");
    }
  }
#ifdef TRAINBENCH_HAVE_CUDA
  for (const CudaDeviceInfo& g : cuda_devices()) {
    fmt::print(
        "GPU {}: {}, {:.1f} GiB, {} SMs, SM clock {} MHz, compute capability {}, driver {}, "
        "runtime {}, cuDNN {}, NCCL {}\n",
        g.index, g.name, g.total_memory_bytes / double(1 << 30), g.sm_count, g.sm_clock_khz / 1000,
        g.compute_capability(), cuda_version_str(g.driver_version),
        cuda_version_str(g.runtime_version), cudnn_version_str(g.cudnn_version),
        nccl_version_str(g.nccl_version));
    for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16}) {
      auto pk = gpu_peak(g.name, p);
      fmt::print("  {} peak: {}\n", precision_name(p),
                 pk ? fmt::format("{:.1f} TFLOP/s ({})", pk->flops_per_s / 1e12, pk->source)
                    : std::string("unknown (not in the device table)"));
      if (!measure) continue;
      BackendConfig cfg;
      cfg.device = DeviceKind::cuda, cfg.device_index = g.index, cfg.precision = p;
      auto be = make_backend(cfg);
      const GemmMeasurement m = measure_backend_gemm(*be, 8192, 1.0);
      fmt::print("  {} measured: {:.1f} TFLOP/s ({})\n", precision_name(p), m.flops_per_s / 1e12,
                 m.source);
    }
  }
  if (cuda_devices().empty()) fmt::print("GPU: none ({})\n", cuda_unavailable_reason());
#else
  fmt::print("GPU: CUDA backend not built in\n");
#endif
#ifdef TRAINBENCH_HAVE_VULKAN
  for (const VulkanDeviceInfo& v : vulkan_devices()) {
    const auto pk = vulkan_fp32_peak(v.name);
    fmt::print(
        "Vulkan {}: {} ({}), driver {}, API {}, {:.1f} GiB{}, subgroup {}, fp16 {}, cooperative "
        "matrix {}, fp32 peak {}{}\n",
        v.index, v.name, v.type, v.driver, v.api_version, v.memory_bytes / double(1 << 30),
        v.unified ? " unified" : "", v.subgroup_size, v.fp16 ? "yes" : "no",
        v.cooperative_matrix ? "yes" : "no",
        pk ? fmt::format("{:.1f} TFLOP/s ({})", pk->flops_per_s / 1e12, pk->source) : "unknown",
        v.usable ? "" : "; not usable: lacks " + v.why_not);
  }
#endif
  for (const BackendInfo& b : list_backends())
    fmt::print("backend {:<12} {:<5} built: {:<3} usable: {:<3} {}\n", b.name,
               device_kind_name(b.device), b.built ? "yes" : "no", b.usable ? "yes" : "no",
               b.why_not);
  return 0;
}

}  // namespace tb
