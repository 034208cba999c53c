// `trainbench run WORKLOAD`: load, train, test, print a summary, write the record.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <ctime>

#include "backends/backend.h"
#include "cli/commands.h"
#include "core/error.h"
#include "report/progress.h"
#include "report/record.h"
#include "train/trainer.h"

namespace tb {

int cpu_threads_available();

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
  fail("--device: '{}' is not cpu, cuda or cuda:N", s);
}

Precision parse_precision(const std::string& s) {
  if (s == "fp32") return Precision::fp32;
  if (s == "tf32") return Precision::tf32;
  if (s == "bf16") return Precision::bf16;
  fail("--precision: '{}' is not fp32, tf32 or bf16", s);
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

int run_command(RunOptions& o) {
  using Clock = std::chrono::steady_clock;
  BackendConfig cfg;
  parse_device(o.device, &cfg.device, &cfg.device_index);
  cfg.precision = o.hp.precision = parse_precision(o.precision);
  cfg.threads = o.hp.threads;
  cfg.reference = o.reference;
  // The device first: a missing GPU fails before minutes of data loading.
  std::unique_ptr<Backend> backend = make_backend(cfg);
  if (cfg.device == DeviceKind::cpu && o.hp.threads == 0) o.hp.threads = cpu_threads_available();
  const Workload& w = find_workload(o.workload);
  const std::string out_path = o.out.empty() ? default_out_path(o) : o.out;

  const auto t_load = Clock::now();
  DatasetPair data = load_workload_data(w, o.hp.data);
  const double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();

  Model model = build_workload_model(w, data.train);
  if (!o.quiet)
    fmt::print("{} on {} ({}, {}): {} train / {} test images, {} parameters, {:.1f} MFLOP per "
               "training image, batch {}, {} epochs\n",
               w.name, o.device, backend->name, o.precision, data.train.count, data.test.count,
               model.param_count, train_flops_per_image(model) / 1e6, o.hp.batch, o.hp.epochs);

  Trainer trainer(model, *backend, o.hp, w, data);
  ProgressPrinter printer(stdout);
  std::function<void(const Progress&)> progress;
  if (!o.quiet) progress = [&printer](const Progress& p) { printer(p); };
  RunFacts facts;
  facts.train = trainer.train(progress);
  facts.test = trainer.evaluate();
  facts.load_seconds = load_s;
  facts.device_kind = device_kind_name(cfg.device);
  facts.device_name = o.device;
  facts.backend = backend->name;
  facts.train_flops_per_image = train_flops_per_image(model);

  const nlohmann::json record = make_record(w, o.hp, model, facts);
  write_json_atomic(out_path, record);

  const TrainResult& t = facts.train;
  const double achieved = record["flops"]["achieved_per_s"].get<double>();
  std::string mfu = "unknown (no peak for this device)";
  if (!record["flops"]["mfu"].is_null())
    mfu = fmt::format("{:.1f}% of {:.0f} GFLOP/s ({})", 100 * record["flops"]["mfu"].get<double>(),
                      *facts.peak_datasheet / 1e9, facts.peak_datasheet_source);
  fmt::print("train {:.2f}s, test {:.2f}s, train+test {:.2f}s (load {:.2f}s)\n", t.train_seconds,
             facts.test.seconds, t.train_seconds + facts.test.seconds, load_s);
  fmt::print("throughput {:.0f} images/s ({:.0f} steady), test accuracy {:.4f}, test loss {:.4f}\n",
             t.images_per_s, t.images_per_s_steady, facts.test.accuracy, facts.test.loss);
  fmt::print("achieved {:.1f} GFLOP/s, MFU {}\n", achieved / 1e9, mfu);
  fmt::print("record: {}\n", out_path);
  return 0;
}

int devices_command(bool measure) {
  for (const BackendInfo& b : list_backends())
    fmt::print("backend {:<12} {:<5} built: {:<3} usable: {:<3} {}\n", b.name,
               device_kind_name(b.device), b.built ? "yes" : "no", b.usable ? "yes" : "no",
               b.why_not);
  return 0;
}

}  // namespace tb
