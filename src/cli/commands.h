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
  bool graphs = true;          // BackendConfig::graphs (--no-graphs)
  bool nhwc = false;           // BackendConfig::bf16_nhwc (--nhwc)
  bool fused_mlp = false;      // BackendConfig::fused_mlp (--fused-mlp)
};

int run_command(RunOptions& o);

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
  bool nhwc = false;           // BackendConfig::bf16_nhwc (--nhwc)
  bool fused_mlp = false;      // BackendConfig::fused_mlp (--fused-mlp)
  int64_t steps = 10;
  std::string data, out;
};
CLI::App* add_profile_command(CLI::App& app, ProfileCommandOptions& o);
int profile_command(const ProfileCommandOptions& o);

int devices_command(bool measure);
int data_command(const std::string& from, const std::string& to);

// "cpu", "cuda", "cuda:N" -> kind and index; throws Error otherwise.
void parse_device(const std::string& s, DeviceKind* kind, int* index);
Precision parse_precision(const std::string& s);
// --nhwc (CUDA bf16) and --fused-mlp (CUDA fp32) apply to one device and precision each; throws
// Error elsewhere rather than run without them.
void check_cuda_options(const BackendConfig& cfg);

}  // namespace tb
