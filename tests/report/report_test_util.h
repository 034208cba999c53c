// Made-up result records and temporary files for the compare / html / profile tests.
#pragma once
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "../test_util.h"

namespace tb::testing {

struct FakeRun {
  std::string workload = "fashion-mlp";
  std::string device = "GPU A";
  std::string kind = "cuda";
  std::string precision = "fp32";
  double train_test_s = 10;
  double images_per_s = 1000;
  double test_accuracy = 0.88;
  double peak = 10e12;  // <= 0: null
  double mfu = 0.01;
  int epochs = 10, batch = 32, steps = 18750;
};

// A trainbench record with the keys compare reads (and a short utilisation timeline).
inline nlohmann::json fake_record(const FakeRun& f) {
  using nlohmann::json;
  json timeline = json::array();
  const char* phases[] = {"load", "train", "train", "train", "test"};
  for (int i = 0; i < 5; ++i)
    timeline.push_back({{"t", 0.1 * (i + 1)},
                        {"phase", phases[i]},
                        {"cpu_busy_pct", 20.0 + 10 * i},
                        {"proc_cpu_pct", 15.0 + 10 * i},
                        {"gpu_busy_pct", 10.0 * i}});
  return {{"trainbench_version", "0.1.0"},
          {"workload", f.workload},
          {"device", {{"kind", f.kind}, {"name", f.device}, {"backend", f.kind}}},
          {"precision", f.precision},
          {"batch", f.batch},
          {"epochs", f.epochs},
          {"steps", f.steps},
          {"hyper", {{"augment", false}}},
          {"times_s",
           {{"train", f.train_test_s * 0.9},
            {"test", f.train_test_s * 0.1},
            {"train_test", f.train_test_s}}},
          {"throughput",
           {{"train_images_per_s", f.images_per_s * 0.9},
            {"train_images_per_s_steady", f.images_per_s}}},
          {"accuracy", {{"train", 0.9}, {"test", f.test_accuracy}}},
          {"loss", {{"epochs", {0.5, 0.4, 0.35}}, {"test", 0.33}}},
          {"flops",
           {{"per_train_image", 409088.0},
            {"peak_datasheet_per_s", f.peak > 0 ? json(f.peak) : json(nullptr)},
            {"peak_datasheet_source", "test peak"},
            {"mfu", f.mfu > 0 ? json(f.mfu) : json(nullptr)}}},
          {"utilisation",
           {{"mean",
             {{"proc_cpu_pct", 30.0},
              {"gpu_busy_pct", 20.0},
              {"by_phase", {{"train", {{"proc_cpu_pct", 35.5}, {"gpu_busy_pct", 61.25}}}}}}},
            {"timeline", timeline}}}};
}

// tests/test_util.h's TempDir, plus the files these tests put in it.
struct ReportDir : TempDir {
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = *this / name;
    std::ofstream(p) << text;
    return p;
  }
  std::string write_json(const std::string& name, const nlohmann::json& j) const {
    return write(name, j.dump(2));
  }
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace tb::testing
