// `trainbench devices`: this machine's devices, their peaks, and which backends are built in.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "bench/device_facts.h"
#include "cli/commands.h"

namespace tb {

CLI::App* add_devices_command(CLI::App& app, DevicesCommandOptions& o) {
  auto* cmd = app.add_subcommand("devices", "List devices, their peaks and the backends");
  cmd->add_flag("!--no-measure", o.measure, "skip the measured GEMM peaks");
  return cmd;
}

int devices_command(const DevicesCommandOptions& o) {
  fmt::print("{}", devices_text(o.measure));
  return 0;
}

}  // namespace tb
