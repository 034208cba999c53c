// The subcommands of the trainbench CLI. Each returns the process exit status; bad input throws
// tb::Error, which main() prints as one line on stderr.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "train/workload.h"

namespace CLI {
class App;
}

namespace tb {

// The CUDA paths that `run` and `profile` can switch: the experimental ones on, the default ones
// off (to measure what each gains, or to step around one).
struct CudaPaths {
  bool graphs = true;      // BackendConfig::graphs (--no-graphs)
  bool bf16_reuse = true;  // BackendConfig::reuse_bf16 (--no-bf16-reuse)
  bool bn_slices = true;   // BackendConfig::bn_slices (--no-bn-slices)
  bool nhwc = false;       // BackendConfig::bf16_nhwc (--nhwc)
  bool fused_mlp = false;  // BackendConfig::fused_mlp (--fused-mlp)
};
void add_cuda_path_flags(CLI::App* cmd, CudaPaths& p);

struct RunOptions {
  std::string workload;
  std::string device = "cpu";
  std::string precision = "fp32";
  Hyper hp;  // filled from the workload's defaults, then the options
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
};

int run_command(RunOptions& o);
// The CPUs this process may use (its affinity mask; backends/cpu/cpu_backend.cpp).
int cpu_threads_available();
// The threads a command on cfg's device runs: cfg.threads, else every usable CPU; 0 off the CPU.
// Warns on stderr where that is more than the CPUs this process may use.
int cpu_threads_of(const BackendConfig& cfg);

// `compare` and `profile` add their own options (cli/compare.cpp, cli/profile.cpp).
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

int devices_command(bool measure);
int data_command(const std::string& from, const std::string& to);

// "cpu", "cuda", "cuda:N" -> kind and index; throws Error otherwise.
void parse_device(const std::string& s, DeviceKind* kind, int* index);
Precision parse_precision(const std::string& s);
// Sets cfg's CUDA paths from p (cfg's device and precision already set). A flag that does not
// apply to them (--nhwc outside CUDA bf16, say) throws Error rather than run without it.
void apply_cuda_paths(const CudaPaths& p, BackendConfig& cfg);

}  // namespace tb
