// The result records of WORKLOADS.md: one JSON object per run (make_record) or per test pass of
// a checkpoint (make_evaluation_record). Every key of either is written here and nowhere else.
// Written atomically (temp file, fsync, rename) so a crash never leaves half a record.
#pragma once
#include <cstdint>
#include <istream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "bench/device_facts.h"
#include "models/model.h"
#include "train/runner.h"
#include "train/workload.h"

namespace tb {

struct Checkpoint;

// Every run's times for --repeat N: the record keeps the last run in full and these, each with
// its median, min, max and spread.
struct RepeatTimes {
  std::vector<double> train_s, test_s, train_test_s, steady, accuracy;
};

// The ranks of a data-parallel run (one rank: world 1, engine "none").
struct RanksFacts {
  int world = 1, local = 1;  // ranks in all, on this node
  std::string engine = "none";
  int64_t bucket_bytes = 0;
};

struct RunFacts {
  DeviceFacts device;
  BackendConfig config;  // what the backend was made with (the CUDA paths go into the record)
  std::string backend;
  double load_seconds = 0;
  TrainResult train;
  EvalResult test;
  double train_flops_per_image = 0;
  nlohmann::json utilisation = nlohmann::json::object();
  nlohmann::json machine = nlohmann::json::object();
  nlohmann::json algorithms = nlohmann::json::object();  // node -> how the backend ran it
  std::string step_graphs;                               // Executor::graph_summary
  bool fused_mlp_step = false;                           // the backend's fused MLP step was taken
  Layout activations = Layout::nchw;                     // the plan's layout of the maps
  int bf16_maps = 0;         // how many nodes' outputs the plan keeps in bf16 (Plan::out_bf16)
  bool interrupted = false;  // a signal ended training or the repeats
  // --checkpoint: where, how often, how many written and failed.
  std::string checkpoint_path;
  double checkpoint_minutes = 0;
  int64_t checkpoint_failures = 0;
  // --resume: from which file, and the checkpoint's header.
  std::string resumed_path;
  const Checkpoint* resumed = nullptr;
  // --init: the weights it started from, and their file's metadata.
  std::string init_path;
  nlohmann::json init_metadata;
  RepeatTimes repeats;
  // The whole data set's sizes: a run that trained or tested on part of it (--steps, the suite's
  // sampled test pass) projects the whole run's times from them.
  int64_t train_images = 0, test_images = 0;
  RanksFacts ranks;
  ExchangeStats exchange;  // rank 0's gradient exchange
};

// What a partial run would have taken whole (the record's "projected"): its training time plus
// the images it did not train at the steady rate, the test pass at its measured rate over the
// whole test set, the load as measured. None for a whole run, or one resumed from a checkpoint
// (its times cover only part of the run).
struct Projection {
  double train_s = 0, test_s = 0, load_s = 0;
  int64_t steps = 0;  // the whole run's
};
std::optional<Projection> project_whole_run(const RunFacts& f, int epochs, int batch);

// MFU against the datasheet (or estimated) peak, and against the measured one. Where the
// achieved rate or the measured peak exceeds the datasheet figure, that figure is known to be
// low (a CPU's nominal clock under its boost): `datasheet_low`, and `mfu` is then against the
// measured peak. An MFU above 1 is never reported: it says the peak is wrong, not the run.
struct MfuFacts {
  double achieved = 0;
  std::optional<double> mfu, mfu_datasheet, mfu_measured;
  bool datasheet_low = false;
};
MfuFacts mfu_facts(double achieved, std::optional<double> datasheet,
                   std::optional<double> measured);

nlohmann::json make_record(const Workload& w, const Hyper& hp, const Model& m, const RunFacts& f);

struct EvaluationFacts {
  std::string checkpoint_path;
  const Checkpoint* checkpoint = nullptr;
  std::string stands;  // where the checkpoint stands, or "weights only (safetensors)"
  DeviceFacts device;
  std::string backend, precision, split;
  int threads = 0;
  int64_t batch = 0;
  bool deterministic = false;
  EvalResult result;
};
nlohmann::json make_evaluation_record(const Workload& w, const EvaluationFacts& f);

void write_json_atomic(const std::string& path, const nlohmann::json& j);
// The largest record or profile file read back (a 10-epoch ResNet-50 record is about 2 MB).
inline constexpr uint64_t kMaxRecordBytes = uint64_t(256) << 20;
// Reads a record, plain or gzipped; throws Error naming the file if it is missing, truncated or
// not a record.
nlohmann::json read_record(const std::string& path);
// The same from a stream (a file's, or a test's), named `path` in messages.
nlohmann::json read_record(std::istream& in, const std::string& path);

}  // namespace tb
