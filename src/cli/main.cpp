// trainbench: train the workloads of WORKLOADS.md on this machine's CPU or GPU and measure how
// well the software uses the hardware. See README.md for the commands; each is one file here.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "core/version.h"

// What this binary's own loops were compiled to assume (CMake's TRAINBENCH_ARCH_FLAGS) and this
// CPU lacks, or null: checked before any of them runs, so an older CPU gets a line, not SIGILL.
static const char* missing_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
#ifdef __AVX512F__
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq") ||
      !__builtin_cpu_supports("avx512cd"))
    return "AVX-512 (x86-64-v4)";
#endif
#ifdef __AVX2__
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
      !__builtin_cpu_supports("bmi2"))
    return "AVX2 and FMA (x86-64-v3)";
#endif
#endif
  return nullptr;
}

int main(int argc, char** argv) {
  using namespace tb;
  if (const char* isa = missing_isa()) {
    std::fprintf(stderr,
                 "trainbench: error: this build needs %s, which this CPU lacks; build it on this "
                 "machine (./setup.sh)\n",
                 isa);
    return 1;
  }
  // A file-size limit (ulimit -f) would end the process mid-write; ignored, the write fails
  // (EFBIG) and the run says so as for a full disk, keeping what it measured.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"trainbench: how fast does this machine train, and is the software using it?"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(TRAINBENCH_VERSION) + " (" + git_revision() + ")");

  RunOptions run_opt;
  auto* run_cmd = add_run_command(app, run_opt);
  DevicesCommandOptions devices_opt;
  auto* devices_cmd = add_devices_command(app, devices_opt);
  DataCommandOptions data_opt;
  auto* data_cmd = add_data_command(app, data_opt);
  CompareCommandOptions compare_opt;
  auto* compare_cmd = add_compare_command(app, compare_opt);
  ProfileCommandOptions profile_opt;
  auto* profile_cmd = add_profile_command(app, profile_opt);
  EvaluateCommandOptions evaluate_opt;
  auto* evaluate_cmd = add_evaluate_command(app, evaluate_opt);
  ExportCommandOptions export_opt;
  auto* export_cmd = add_export_command(app, export_opt);
  SuiteCommandOptions suite_opt;
  auto* suite_cmd = add_suite_command(app, suite_opt);

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
    if (*run_cmd) return run_command(run_opt);
    if (*devices_cmd) return devices_command(devices_opt);
    if (*data_cmd) return data_command(data_opt);
    if (*compare_cmd) return compare_command(compare_opt);
    if (*profile_cmd) return profile_command(profile_opt);
    if (*evaluate_cmd) return evaluate_command(evaluate_opt);
    if (*export_cmd) return export_command(export_opt);
    if (*suite_cmd) return suite_command(suite_opt);
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
