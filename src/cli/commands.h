// The subcommands of the trainbench CLI. Each returns the process exit status; bad input throws
// tb::Error, which main() prints as one line on stderr.
#pragma once
#include <string>
#include <vector>

#include "train/workload.h"

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
};

int run_command(RunOptions& o);
int devices_command(bool measure);
int data_command(const std::string& from, const std::string& to);

// "cpu", "cuda", "cuda:N" -> kind and index; throws Error otherwise.
void parse_device(const std::string& s, DeviceKind* kind, int* index);
Precision parse_precision(const std::string& s);

}  // namespace tb
