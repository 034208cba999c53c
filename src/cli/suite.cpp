// `trainbench suite`: how fast this machine trains, against the machines the user knows. On one
// device it runs fashion-mlp whole and ResNet-50 on CIFAR-10 for a step budget with a sampled
// test pass in each precision the device runs (the records project the whole runs), then writes
// one HTML report comparing them with the seed article's machines and any records given.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "cli/commands.h"
#include "cli/stop_on_signal.h"
#include "core/error.h"
#include "data/cifar.h"
#include "report/compare.h"
#include "report/html.h"
#include "report/record.h"

namespace tb {

namespace fs = std::filesystem;

CLI::App* add_suite_command(CLI::App& app, SuiteCommandOptions& o) {
  auto* cmd = app.add_subcommand(
      "suite",
      "Time both workloads on this machine (ResNet-50 for a step budget, its whole run "
      "projected) and compare them with the seed article's machines in one HTML report");
  cmd->add_option("--device", o.device,
                  "cpu | cuda | cuda:N (default: cuda where it runs, else cpu)");
  cmd->add_option("--out", o.out, "folder for the records (default results/suite-<time>/)");
  cmd->add_option("--html", o.html, "the report (default DIR/report.html)");
  cmd->add_flag("--full", o.full,
                "run every workload whole (ResNet-50's 10 epochs: hours on a CPU)");
  cmd->add_option("--steps", o.steps,
                  "training steps of each part that is not run whole (ResNet-50's budget)")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 40));
  cmd->add_option("--test-batches", o.test_batches,
                  "test batches of each part that is not run whole (its test pass projected)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--quick", o.quick, "fashion-mlp for the step budget too (a look in seconds)");
  cmd->add_option("--with", o.with, "result records to compare with (trainbench or PyTorch peer)");
  cmd->add_option("--data-cifar", o.data_cifar,
                  "CIFAR-10: the binary layout, image folders or a .tar.gz of either (default: "
                  "data/cifar10, then $TRAINBENCH_DATA/cifar10)");
  cmd->add_option("--threads", o.threads, "CPU threads (default: all usable cores)")
      ->check(CLI::Range(1, 4096));
  return cmd;
}

namespace {

// The device a plain `suite` runs on: the first GPU where its backend starts, else the CPU.
std::string fastest_device() {
  for (const BackendInfo& b : list_backends())
    if (b.device == DeviceKind::cuda && b.usable) {
      BackendConfig cfg;
      cfg.device = DeviceKind::cuda;
      try {
        make_backend(cfg);
        return "cuda";
      } catch (const Error&) {
      }
    }
  return "cpu";
}

// Where the device runs a precision: its backend starts in it. Otherwise the one-line reason.
std::string precision_refusal(const std::string& device, Precision p) {
  BackendConfig cfg;
  parse_device(device, &cfg.device, &cfg.device_index);
  cfg.precision = p;
  try {
    make_backend(cfg);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

// The CIFAR-10 a plain `run resnet50-cifar10` would read, or "" where there is none.
std::string find_cifar(const std::string& given) {
  if (!given.empty()) {
    TB_CHECK(fs::exists(given), "--data-cifar {}: not found", given);
    return given;
  }
  for (const std::string& p : cifar10_default_paths())
    if (fs::exists(p)) return p;
  return "";
}

std::string stamp() {
  const std::time_t now = std::time(nullptr);
  char s[32];
  std::strftime(s, sizeof(s), "%Y%m%d-%H%M%S", std::localtime(&now));
  return s;
}

// The 1-minute load average ("" where unknown): a busy machine's times are slower.
std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string first;
  in >> first;
  return first;
}

struct Part {
  std::string workload, precision, data;
  bool whole = true;
};

std::string part_line(const nlohmann::json& r) {
  const nlohmann::json& t = r["times_s"];
  std::string line = fmt::format(
      "train+test {:.2f} s, {:.0f} images/s steady, test accuracy {:.4f}",
      t["train_test"].get<double>(), r["throughput"]["train_images_per_s_steady"].get<double>(),
      r["accuracy"]["test"].get<double>());
  if (r.contains("projected"))
    line += fmt::format(" (of {} test images); whole run projected {:.0f} s",
                        r["accuracy"]["test_images"].get<int64_t>(),
                        r["projected"]["times_s"]["train_test"].get<double>());
  return line;
}

}  // namespace

int suite_command(const SuiteCommandOptions& o) {
  using Clock = std::chrono::steady_clock;
  StopOnSignal stop;  // first: before any thread starts
  const std::string device = o.device.empty() ? fastest_device() : o.device;
  const std::string dir = o.out.empty() ? "results/suite-" + stamp() : o.out;
  const std::string html = o.html.empty() ? (fs::path(dir) / "report.html").string() : o.html;
  std::vector<nlohmann::json> others;  // --with: read first, so a bad file fails before hours
  for (const std::string& f : o.with) others.push_back(read_compare_input(f));
  const std::string cifar = find_cifar(o.data_cifar);
  if (std::string why = precision_refusal(device, Precision::fp32); !why.empty()) fail("{}", why);
  fs::create_directories(dir);

  std::vector<Part> parts = {{"fashion-mlp", "fp32", "", !o.quick || o.full}};
  if (cifar.empty()) {
    std::vector<std::string> tried = cifar10_default_paths();
    fmt::print("resnet50-cifar10: skipped, no CIFAR-10 at {} (--data-cifar PATH)\n",
               fmt::join(tried, " or "));
  }
  const std::vector<std::string> precisions =
      device == "cpu" ? std::vector<std::string>{"fp32", "bf16"}
                      : std::vector<std::string>{"fp32", "tf32", "bf16"};
  for (const std::string& precision : precisions) {
    if (cifar.empty()) break;
    if (std::string why = precision_refusal(device, parse_precision(precision)); !why.empty()) {
      fmt::print("resnet50-cifar10 {}: skipped ({})\n", precision, why);
      continue;
    }
    parts.push_back({"resnet50-cifar10", precision, cifar, o.full});
  }

  std::vector<std::string> files, ran;
  std::vector<nlohmann::json> records;
  const std::string load_at_start = load_average();
  int status = 0;
  for (size_t i = 0; i < parts.size() && !stop.raised.load(); ++i) {
    const Part& p = parts[i];
    RunOptions r;
    r.workload = p.workload, r.device = device, r.precision = p.precision, r.data = p.data;
    r.threads = o.threads;
    r.quiet = true, r.summary = false;
    if (!p.whole) {
      r.steps = o.steps;
      r.test_images = o.test_batches * find_workload(p.workload).defaults.batch;
    }
    std::string dev = device;
    for (char& c : dev)
      if (c == ':') c = '-';
    r.out = (fs::path(dir) / fmt::format("{}-{}-{}.json", p.workload, dev, p.precision)).string();
    const std::string what =
        p.whole ? "whole" : fmt::format("{} steps, {} test batches", o.steps, o.test_batches);
    fmt::print("[{}/{}] {} {} {}, {}: ", i + 1, parts.size(), p.workload, device, p.precision,
               what);
    std::fflush(stdout);
    const auto t0 = Clock::now();
    try {
      const RunOutcome done = run_workload(r, stop);
      if (done.record.is_null()) {
        status = done.status;
        break;
      }
      status = std::max(status, done.status);
      files.push_back(done.path), records.push_back(done.record);
      ran.push_back(fmt::format("{} {} {}", p.workload, p.precision, what));
      fmt::print("{} ({:.0f} s)\n", part_line(done.record),
                 std::chrono::duration<double>(Clock::now() - t0).count());
    } catch (const Error& e) {
      fmt::print("failed: {}\n", e.what());
      status = 1;
    }
    stop.armed.store(false);  // between parts a signal ends the suite, as during a run's load
  }
  if (records.empty() && stop.raised.load()) return 130;
  if (records.empty()) fail("suite: no part ran, so there is no report");

  // One table per workload: the suite's records first, then the user's; the seed article's rows.
  Comparison c;
  for (size_t i = 0; i < others.size(); ++i)
    files.push_back(o.with[i]), records.push_back(others[i]);
  std::vector<std::string> workloads;
  for (const nlohmann::json& r : records)
    if (std::find(workloads.begin(), workloads.end(), r.value("workload", "")) == workloads.end())
      workloads.push_back(r.value("workload", ""));
  for (const std::string& w : workloads) {
    std::vector<nlohmann::json> in;
    std::vector<std::string> names;
    for (size_t i = 0; i < records.size(); ++i)
      if (records[i].value("workload", "") == w)
        in.push_back(records[i]), names.push_back(files[i]);
    CompareSettings s;
    s.with_seed = true, s.force = true;  // the user's records may differ in settings: noted
    Comparison one = compare_inputs(in, names, s);
    for (CompareTable& t : one.tables) c.tables.push_back(std::move(t));
  }
  c.files = files;
  fmt::print("{}", format_compare_text(c));
  HtmlPage page;
  page.title = "trainbench suite";
  const nlohmann::json& first = records.front();
  page.intro.push_back(fmt::format("{} ({}), {} threads, trainbench {} ({}).",
                                   first["device"].value("name", device), device,
                                   first.value("threads", 0), first.value("trainbench_version", ""),
                                   first.value("git_revision", "")));
  page.intro.push_back(fmt::format(
      "Ran: {}. A part of some steps and test batches projects its whole run from its steady rate "
      "(marked projected, hatched).",
      fmt::join(ran, "; ")));
  if (!load_at_start.empty())
    page.intro.push_back(fmt::format(
        "Load average when the suite began: {} (other processes on this machine slow its times).",
        load_at_start));
  write_text_atomic(html, render_compare_html(c, page));
  fmt::print("records: {}\nhtml: {}\n", dir, html);
  return stop.raised.load() ? 130 : status;
}

}  // namespace tb
