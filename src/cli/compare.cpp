// `trainbench compare A.json B.json ...`: the records of one workload side by side (see
// report/compare.h), printed, and optionally written as CSV and as one self-contained HTML page.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "report/compare.h"
#include "report/html.h"

namespace tb {

CLI::App* add_compare_command(CLI::App& app, CompareCommandOptions& o) {
  auto* cmd = app.add_subcommand(
      "compare", "Put result records of one workload side by side: time, peak ratio, MFU, use");
  cmd->add_option("records", o.files,
                  "result records (trainbench or PyTorch peer); profile JSONs add a per-layer "
                  "breakdown to the HTML")
      ->required();
  cmd->add_option("--html", o.html, "write a self-contained HTML report here");
  cmd->add_option("--csv", o.csv, "write the table as CSV here");
  cmd->add_flag("--with-seed", o.with_seed, "add the seed article's published rows");
  cmd->add_flag("--force", o.force, "compare records of different workloads or settings");
  return cmd;
}

int compare_command(const CompareCommandOptions& o) {
  CompareSettings s;
  s.with_seed = o.with_seed, s.force = o.force;
  const Comparison c = compare_files(o.files, s);
  fmt::print("{}", format_compare_text(c));
  if (!o.csv.empty()) {
    write_text_atomic(o.csv, format_compare_csv(c));
    fmt::print("csv: {}\n", o.csv);
  }
  if (!o.html.empty()) {
    write_text_atomic(o.html, render_compare_html(c));
    fmt::print("html: {}\n", o.html);
  }
  return 0;
}

}  // namespace tb
