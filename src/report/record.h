// The result record of WORKLOADS.md: one JSON object per run, written atomically (temp file,
// fsync, rename) so a crash never leaves half a record.
#pragma once
#include <istream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "models/model.h"
#include "train/trainer.h"
#include "train/workload.h"

namespace tb {

struct RunFacts {
  std::string device_kind, device_name, backend;
  double load_seconds = 0;
  TrainResult train;
  EvalResult test;
  double train_flops_per_image = 0;
  std::optional<double> peak_datasheet, peak_measured;  // FLOP/s for the precision used
  std::string peak_datasheet_source, peak_measured_source;
  nlohmann::json device_extra = nlohmann::json::object();
  nlohmann::json utilisation = nlohmann::json::object();
  nlohmann::json machine = nlohmann::json::object();
  nlohmann::json versions = nlohmann::json::object();
  nlohmann::json algorithms = nlohmann::json::object();  // node -> how the backend ran it
};

nlohmann::json make_record(const Workload& w, const Hyper& hp, const Model& m, const RunFacts& f);

void write_json_atomic(const std::string& path, const nlohmann::json& j);
// Reads a record; throws Error naming the file if it is missing, truncated or not a record.
nlohmann::json read_record(const std::string& path);
// The same from a stream (a file's, or a test's), named `path` in messages.
nlohmann::json read_record(std::istream& in, const std::string& path);

}  // namespace tb
