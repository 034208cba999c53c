// The workloads of WORKLOADS.md: each one's defaults in one printable, serialisable struct
// (hlb-CIFAR10's `hyp`), its model builder, its data normalisation and FLOP count.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "data/dataset.h"
#include "models/model.h"
#include "ops/optimizer.h"

namespace tb {

struct Hyper {
  std::string workload;
  int epochs = 10;
  int batch = 32;
  int64_t steps = -1;              // stop after this many steps (timing runs); -1 = all epochs
  std::string optimizer = "adam";  // "adam" | "sgd"
  AdamParams adam;
  SgdParams sgd;
  uint64_t seed = 0;
  bool augment = false;
  Precision precision = Precision::fp32;
  int threads = 0;   // 0 = all usable cores
  std::string data;  // data path ("" = the workload's default)
};
nlohmann::json hyper_json(const Hyper& h);

struct Workload {
  std::string name;
  std::string description;
  Hyper defaults;
  float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};  // per channel, after scaling to [0, 1]
  double expected_test_accuracy = 0;              // WORKLOADS.md's figure after the default run
};

const std::vector<Workload>& workloads();
// Throws Error listing the known names when name is unknown.
const Workload& find_workload(const std::string& name);
Model build_workload_model(const Workload& w, const Dataset& train);
// Loads the workload's data (train and test) from path or its default location.
DatasetPair load_workload_data(const Workload& w, const std::string& path);

}  // namespace tb
