#include "report/record.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/file.h"
#include "core/json_depth.h"
#include "core/version.h"

namespace tb {

static nlohmann::json opt(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

nlohmann::json make_record(const Workload& w, const Hyper& hp, const Model& m, const RunFacts& f) {
  using nlohmann::json;
  const TrainResult& t = f.train;
  json epochs_s = json::array(), epochs_loss = json::array(), epochs_acc = json::array();
  for (const EpochResult& e : t.epochs) {
    epochs_s.push_back(e.seconds);
    epochs_loss.push_back(e.loss);
    epochs_acc.push_back(e.accuracy);
  }
  const double achieved = f.train_flops_per_image * t.images_per_s_steady;
  std::optional<double> mfu_datasheet, mfu_measured;
  if (f.peak_datasheet && *f.peak_datasheet > 0) mfu_datasheet = achieved / *f.peak_datasheet;
  if (f.peak_measured && *f.peak_measured > 0) mfu_measured = achieved / *f.peak_measured;

  json device = f.device_extra;
  device["kind"] = f.device_kind;
  device["name"] = f.device_name;
  device["backend"] = f.backend;

  json r = {
      {"algorithms", f.algorithms},
      {"trainbench_version", TRAINBENCH_VERSION},
      {"git_revision", git_revision()},
      {"workload", w.name},
      {"device", device},
      {"precision", precision_name(hp.precision)},
      {"batch", hp.batch},
      {"epochs", hp.epochs},
      {"epochs_completed", t.epochs.size()},
      {"steps", t.steps},
      {"stopped_by_steps", t.stopped_by_steps},
      {"resumed_epochs", t.resumed_epochs},
      {"resumed_steps", t.resumed_steps},
      {"seed", hp.seed},
      {"threads", hp.threads},
      {"hyper", hyper_json(hp)},
      {"model",
       {{"name", m.name},
        {"parameters", m.param_count},
        {"macs_per_image", m.macs_per_image()},
        {"conv_macs_per_image", m.conv_macs_per_image()}}},
      {"times_s",
       {{"load", f.load_seconds},
        {"train", t.train_seconds},
        {"train_before_resume", t.resumed_seconds},
        {"checkpoints", t.checkpoint_seconds},
        {"test", f.test.seconds},
        {"train_test", t.train_seconds + f.test.seconds},
        {"epochs", epochs_s}}},
      {"throughput",
       {{"train_images_per_s", t.images_per_s},
        {"train_images_per_s_steady", t.images_per_s_steady},
        {"train_images", t.images}}},
      {"step_split_ms",
       {{"data", t.split.data_ms},
        {"forward", t.split.forward_ms},
        {"loss", t.split.loss_ms},
        {"backward", t.split.backward_ms},
        {"optimizer", t.split.optimizer_ms},
        {"sampled_steps", t.split.samples},
        {"host_issue", t.split.host_ms},
        {"whole_step", t.split.whole_ms},
        {"host_sampled_steps", t.split.host_samples}}},
      {"accuracy",
       {{"train", t.epochs.empty() ? 0.0 : t.epochs.back().accuracy}, {"test", f.test.accuracy}}},
      {"loss",
       {{"epochs", epochs_loss},
        {"train_accuracy_epochs", epochs_acc},
        {"final_train", t.epochs.empty() ? 0.0 : t.epochs.back().loss},
        {"test", f.test.loss}}},
      {"flops",
       {{"per_train_image", f.train_flops_per_image},
        {"per_forward_image", forward_flops_per_image(m)},
        {"achieved_per_s", achieved},
        {"peak_datasheet_per_s", opt(f.peak_datasheet)},
        {"peak_datasheet_source", f.peak_datasheet_source},
        {"peak_measured_per_s", opt(f.peak_measured)},
        {"peak_measured_source", f.peak_measured_source},
        {"mfu", opt(mfu_datasheet)},
        {"mfu_measured", opt(mfu_measured)}}},
      {"utilisation", f.utilisation},
      {"machine", f.machine},
      {"versions", f.versions},
  };
  return r;
}

void write_json_atomic(const std::string& path, const nlohmann::json& j) {
  write_text_atomic(path, j.dump(2) + "\n");
}

nlohmann::json read_record(const std::string& path) {
  std::ifstream in(path);
  TB_CHECK(in.good(), "{}: cannot open", path);
  return read_record(in, path);
}

nlohmann::json read_record(std::istream& in, const std::string& path) {
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path, std::string(e.what()).substr(0, 120));
  }
  TB_CHECK(!json_nests_deeper(j), "{}: nested more than {} levels deep (not a result record)", path,
           kMaxJsonDepth);
  TB_CHECK(!j.is_object() || j.value("kind", nlohmann::json()) != "evaluation",
           "{}: the record of `trainbench evaluate`, not of a run", path);
  TB_CHECK(j.is_object() && j.contains("workload") && j.contains("times_s"),
           "{}: not a trainbench result record (no 'workload' / 'times_s')", path);
  return j;
}

}  // namespace tb
