// The subcommands of the trainbench CLI, one file each: add_X_command declares its options,
// X_command runs it and returns the process exit status. Bad input throws tb::Error, which
// main() prints as one line on stderr.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "train/workload.h"

namespace CLI {
class App;
class Validator;
}  // namespace CLI

namespace tb {

// ---- options shared by several commands (options.cpp) ----

// The CUDA paths that `run` and `profile` can switch: the experimental ones on, the default ones
// off (to measure what each gains, or to step around one).
struct CudaPaths {
  bool graphs = true;         // BackendConfig::graphs (--no-graphs)
  bool bf16_reuse = true;     // BackendConfig::reuse_bf16 (--no-bf16-reuse)
  bool bn_slices = true;      // CudaConfig::bn_slices (--no-bn-slices)
  bool nhwc = false;          // CudaConfig::bf16_nhwc (--nhwc)
  bool fused_mlp = false;     // CudaConfig::fused_mlp (--fused-mlp)
  bool cpu_nhwc = true;       // BackendConfig::cpu_nhwc (--nchw)
  bool cpu_fused_mlp = true;  // BackendConfig::cpu_fused_mlp (--no-fused-mlp)
  bool cpu_bf16_maps = true;  // BackendConfig::bf16_maps (--fp32-maps)
};
void add_cuda_path_flags(CLI::App* cmd, CudaPaths& p);
// Sets cfg's paths from p (cfg's device and precision already set). A flag that does not apply
// to them (--nhwc outside CUDA bf16, say) throws Error rather than run without it.
void apply_cuda_paths(const CudaPaths& p, BackendConfig& cfg);

// A number in [lo, hi] (CLI::Range alone lets "nan" through).
CLI::Validator finite_in(double lo, double hi);
Precision parse_precision(const std::string& s);
// The CPUs this process may use (its affinity mask; backends/cpu/cpu_backend.cpp).
int cpu_threads_available();
// The threads a command on cfg's device runs: cfg.threads, else every usable CPU; 0 off the CPU.
// Warns on stderr where that is more than the CPUs this process may use.
int cpu_threads_of(const BackendConfig& cfg);

// ---- the commands ----

struct RunOptions {
  std::string workload;
  std::string device = "cpu";
  std::string precision = "fp32";
  // Hyper-parameters as given (-1, "" or false: the workload's default).
  int epochs = -1, batch = -1, threads = -1;
  int64_t steps = -1;
  double lr = -1, momentum = -1, weight_decay = -1;
  uint64_t seed = 0;
  std::string optimizer, data;
  bool nesterov = false, augment = false;
  std::string out;
  bool quiet = false;
  bool reference = false;  // the plain-loop backend (debugging, tests)
  bool measure_peak = true;
  int repeat = 1;              // --repeat N: N runs, median and spread of every time
  bool deterministic = false;  // BackendConfig::deterministic
  CudaPaths paths;
  std::string checkpoint;         // --checkpoint: the run's state written there after each epoch
  double checkpoint_minutes = 0;  // --checkpoint-every: also inside epochs, this often
  std::string resume;             // --resume: go on from this checkpoint
  std::string init;               // --init: start from these weights (.safetensors)
  double bucket_mb = 4;           // --bucket-mb: gradient buckets over ranks (0: one allreduce)
  // For `suite` (no flags): test on the first test_images only (a sampled test pass, whose
  // record projects the whole pass); no summary or record line (it prints one line a run).
  int64_t test_images = -1;
  bool summary = true;
};
CLI::App* add_run_command(CLI::App& app, RunOptions& o);
int run_command(const RunOptions& o);

class StopOnSignal;  // cli/stop_on_signal.h
struct RunOutcome {
  nlohmann::json record;  // null where no step ran
  std::string path;       // where the record went
  int status = 0;         // the process exit status `run` gives
};
// `run`'s work, for `suite` too (several runs under one StopOnSignal, made before any thread).
class Comm;  // comm/comm.h
// comm: this rank's communicator under mpirun, null for one process.
RunOutcome run_workload(const RunOptions& o, StopOnSignal& stop, Comm* comm = nullptr);

struct CompareCommandOptions {
  std::vector<std::string> files;  // records, and profile JSONs for the HTML
  std::string html, csv;
  bool with_seed = false;
  bool force = false;
};
CLI::App* add_compare_command(CLI::App& app, CompareCommandOptions& o);
int compare_command(const CompareCommandOptions& o);

struct ProfileCommandOptions {
  std::string workload;
  std::string device = "cpu";
  std::string precision = "fp32";
  int batch = -1, threads = -1;
  bool deterministic = false;  // BackendConfig::deterministic
  CudaPaths paths;
  int64_t steps = 10;
  std::string data, out;
};
CLI::App* add_profile_command(CLI::App& app, ProfileCommandOptions& o);
int profile_command(const ProfileCommandOptions& o);

struct EvaluateCommandOptions {
  std::string checkpoint;
  std::string device = "cpu";
  std::string precision;       // "": the one the checkpoint trained in
  std::string split = "test";  // "test" | "train"
  int batch = -1, threads = -1;
  bool reference = false, deterministic = false;
  std::string data, out;
  std::string workload;  // a .safetensors file's, where its metadata has none
  std::string logits;    // --logits: every image's logits, float32 [images, classes], here
};
CLI::App* add_evaluate_command(CLI::App& app, EvaluateCommandOptions& o);
int evaluate_command(const EvaluateCommandOptions& o);

struct ExportCommandOptions {
  std::string checkpoint, out;
};
CLI::App* add_export_command(CLI::App& app, ExportCommandOptions& o);
int export_command(const ExportCommandOptions& o);

struct DevicesCommandOptions {
  bool measure = true;
};
CLI::App* add_devices_command(CLI::App& app, DevicesCommandOptions& o);
int devices_command(const DevicesCommandOptions& o);

struct SuiteCommandOptions {
  std::string device;  // "": cuda where its backend starts, else cpu
  std::string out, html, data_cifar;
  std::vector<std::string> with;
  bool full = false;   // every workload whole
  bool quick = false;  // fashion-mlp for the step budget too
  // ResNet-50's budget: at 1-3 s a step on a small CPU, a minute or two, and enough steps past
  // the 5% warm-up for a steady rate.
  int64_t steps = 33;
  int test_batches = 10;  // of 128 CIFAR images: a tenth of the pass, its rate projected
  int threads = -1;
};
CLI::App* add_suite_command(CLI::App& app, SuiteCommandOptions& o);
int suite_command(const SuiteCommandOptions& o);

struct DataCommandOptions {
  std::string from, to;
};
CLI::App* add_data_command(CLI::App& app, DataCommandOptions& o);
int data_command(const DataCommandOptions& o);

}  // namespace tb
