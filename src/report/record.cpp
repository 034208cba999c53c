#include "report/record.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "bench/machine.h"
#include "core/error.h"
#include "core/file.h"
#include "core/gzio.h"
#include "core/json_depth.h"
#include "core/version.h"
#include "models/cost.h"
#include "train/checkpoint.h"

namespace tb {

namespace {

nlohmann::json opt(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

// Every value, its median, min, max and spread ((max - min) / median).
nlohmann::json spread_json(std::vector<double> v) {
  nlohmann::json j = {{"values", v}};
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  const double median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  j["median"] = median, j["min"] = v.front(), j["max"] = v.back();
  j["spread"] = median != 0 ? (v.back() - v.front()) / median : 0.0;
  return j;
}

nlohmann::json device_json(const DeviceFacts& d, const std::string& backend) {
  nlohmann::json j = d.extra;
  j["kind"] = d.kind, j["name"] = d.name, j["backend"] = backend;
  return j;
}

// Data-parallel ranks: who, how the batch is cut, throughput, and the gradient exchange with
// nccl-tests' bandwidths (algbw = bytes / time, busbw = algbw * 2(n-1)/n: what each rank sends
// and receives in a ring allreduce, comparable across rank counts).
nlohmann::json ranks_json(const Hyper& hp, const Model& m, const RunFacts& f) {
  const RanksFacts& rk = f.ranks;
  const TrainResult& t = f.train;
  const int n = rk.world;
  nlohmann::json j = {{"world_size", n},
                      {"ranks_per_node", rk.local},
                      {"engine", rk.engine},
                      {"batch_global", hp.batch},
                      {"batch_per_rank", shard_count(hp.batch, 0, n)},
                      {"images_per_s_total", t.images_per_s_steady},
                      {"images_per_s_per_rank", t.images_per_s_steady / n}};
  const ExchangeStats& x = f.exchange;
  if (n == 1 || x.steps == 0) return j;
  const double bytes = double(m.param_count) * sizeof(float), ring = 2.0 * (n - 1) / n;
  const double span_ms = x.span_ms / double(x.steps), exposed_ms = x.exposed_ms / double(x.steps);
  const double step_ms = t.steps ? 1e3 * t.train_seconds / double(t.steps) : 0;
  const double algbw = span_ms > 0 ? bytes / (span_ms / 1e3) : 0;
  j["allreduce"] = {
      {"bucket_bytes", rk.bucket_bytes},
      {"buckets_per_step", double(x.buckets) / double(x.steps)},
      {"ms_per_step", span_ms},
      {"exposed_ms_per_step", exposed_ms},
      {"exposed_share", span_ms > 0 ? exposed_ms / span_ms : 0.0},
      {"exposed_share_of_step", step_ms > 0 ? exposed_ms / step_ms : 0.0},
      {"gradient_bytes_per_step", bytes},
      {"bytes_sent_per_rank_per_step", bytes * ring},
      {"bytes_sent_per_rank", bytes * ring * double(x.steps)},
      {"algbw_GB_per_s", algbw / 1e9},
      {"busbw_GB_per_s", algbw * ring / 1e9},
      {"timed",
       "rank 0, per step: from its first bucket's start to the last one's end (with buckets this "
       "span holds the backward between them: --bucket-mb 0 times the allreduce alone); exposed: "
       "waited for after backward; bytes sent as a ring allreduce sends them"}};
  return j;
}

}  // namespace

MfuFacts mfu_facts(double achieved, std::optional<double> datasheet,
                   std::optional<double> measured) {
  MfuFacts f;
  f.achieved = achieved;
  f.mfu_datasheet = mfu(achieved, datasheet);
  f.mfu_measured = mfu(achieved, measured);
  f.datasheet_low = datasheet && ((measured && *measured > *datasheet) || achieved > *datasheet);
  f.mfu = f.datasheet_low ? f.mfu_measured : f.mfu_datasheet;
  for (std::optional<double>* m : {&f.mfu, &f.mfu_datasheet, &f.mfu_measured})
    if (*m && **m > 1) m->reset();
  return f;
}

std::optional<Projection> project_whole_run(const RunFacts& f, int epochs, int batch) {
  const TrainResult& t = f.train;
  const int64_t train_whole = f.train_images * epochs;
  if (f.train_images <= 0 || f.test_images <= 0 || t.resumed_epochs > 0 || t.resumed_steps > 0 ||
      t.images <= 0 || t.images_per_s_steady <= 0 || f.test.images <= 0 ||
      (t.images >= train_whole && f.test.images >= f.test_images))
    return std::nullopt;
  Projection p;
  // By images, not steps: each epoch's last batch is short, and on a CPU a step's time goes with
  // its images. The measured part keeps its warm-up (first steps, algorithm choice).
  p.train_s = t.train_seconds +
              double(std::max<int64_t>(0, train_whole - t.images)) / t.images_per_s_steady;
  p.test_s = f.test.seconds * double(f.test_images) / double(f.test.images);
  p.load_s = f.load_seconds;
  p.steps = epochs * ((f.train_images + batch - 1) / batch);
  return p;
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
  const DeviceFacts& d = f.device;
  // The peaks are one rank's device's: over several ranks, each rank's share of the throughput
  // is set against them.
  const MfuFacts mf = mfu_facts(f.train_flops_per_image * t.images_per_s_steady / f.ranks.world,
                                d.peak_datasheet, d.peak_measured);

  json r = {
      {"algorithms", f.algorithms},
      {"trainbench_version", TRAINBENCH_VERSION},
      {"git_revision", git_revision()},
      {"workload", w.name},
      {"device", device_json(d, f.backend)},
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
        {"exchange", t.split.exchange_ms},
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
        {"achieved_per_s", mf.achieved},
        {"peak_datasheet_per_s", opt(d.peak_datasheet)},
        {"peak_datasheet_source", d.peak_datasheet_source},
        {"peak_datasheet_low", mf.datasheet_low},
        {"peak_measured_per_s", opt(d.peak_measured)},
        {"peak_measured_source", d.peak_measured_source},
        {"per_rank", f.ranks.world > 1},  // achieved and peaks are one rank's
        {"mfu", opt(mf.mfu)},
        {"mfu_datasheet", opt(mf.mfu_datasheet)},
        {"mfu_measured", opt(mf.mfu_measured)}}},
      {"utilisation", f.utilisation},
      {"machine", f.machine},
      {"versions", f.machine.value("versions", json::object())},
      {"interrupted", f.interrupted},
      {"deterministic", f.config.deterministic},
      {"step_graphs", f.step_graphs},
      // conv_layout: what CUDA's bf16 convolutions read (--nhwc); activations: how the run's maps
      // lie between ops (the plan's layout: NHWC on the CPU by default).
      {"conv_layout", f.config.cuda.bf16_nhwc ? "nhwc" : "nchw"},
      {"activations", layout_name(f.activations)},
      {"bf16_maps", f.bf16_maps},
      {"fused_mlp_step", f.fused_mlp_step},
      {"diverged", t.diverged ? json{{"step", t.diverged_step},
                                     {"epoch", t.diverged_epoch},
                                     {"step_exact", t.diverged_step_exact},
                                     {"layer", t.diverged_layer}}
                              : json(false)},
  };
  r["ranks"] = ranks_json(hp, m, f);
  if (!f.checkpoint_path.empty())
    r["checkpoint"] = {{"path", f.checkpoint_path},
                       {"every_minutes", f.checkpoint_minutes},
                       {"written", t.checkpoints},
                       {"failed", f.checkpoint_failures}};
  if (!f.init_path.empty()) r["init"] = {{"path", f.init_path}, {"metadata", f.init_metadata}};
  if (f.resumed)
    r["resumed_from"] = {{"path", f.resumed_path},
                         {"epochs", f.resumed->epochs_done},
                         {"steps_into_epoch", f.resumed->epoch_so_far.steps},
                         {"written_by", f.resumed->device}};
  if (f.config.device == DeviceKind::cuda)
    r["cuda_paths"] = {{"graphs", f.config.graphs},
                       {"bf16_reuse", f.config.reuse_bf16},
                       {"bn_slices", f.config.cuda.bn_slices},
                       {"nhwc", f.config.cuda.bf16_nhwc},
                       {"fused_mlp", f.config.cuda.fused_mlp}};
  r["accuracy"]["test_images"] = f.test.images;  // fewer than the test set: a sampled test pass
  json samples = json::array();
  for (auto [x, loss] : t.loss_samples) samples.push_back({x, loss});
  r["loss"]["samples"] = samples;  // [epochs into the run, mean loss since the previous sample]
  if (const std::optional<Projection> p = project_whole_run(f, hp.epochs, hp.batch))
    r["projected"] = {
        {"times_s",
         {{"train", p->train_s},
          {"test", p->test_s},
          {"load", p->load_s},
          {"train_test", p->train_s + p->test_s}}},
        {"steps", p->steps},
        {"from",
         {{"train_images", t.images},
          {"of_train_images", f.train_images * hp.epochs},
          {"test_images", f.test.images},
          {"of_test_images", f.test_images}}},
        {"method",
         "training: the measured time plus the remaining images at the steady rate; test pass: "
         "its measured rate over the whole test set; load: as measured"}};
  const RepeatTimes& rep = f.repeats;
  if (rep.train_s.size() > 1)
    r["repeats"] = {{"count", rep.train_s.size()},
                    {"train_s", spread_json(rep.train_s)},
                    {"test_s", spread_json(rep.test_s)},
                    {"train_test_s", spread_json(rep.train_test_s)},
                    {"train_images_per_s_steady", spread_json(rep.steady)},
                    {"test_accuracy", spread_json(rep.accuracy)}};
  return r;
}

nlohmann::json make_evaluation_record(const Workload& w, const EvaluationFacts& f) {
  const Checkpoint& c = *f.checkpoint;
  return {{"kind", "evaluation"},
          {"trainbench_version", TRAINBENCH_VERSION},
          {"git_revision", git_revision()},
          {"workload", w.name},
          {"checkpoint",
           {{"path", f.checkpoint_path},
            {"stands", f.stands},
            {"epochs_done", c.epochs_done},
            {"steps_into_epoch", c.epoch_so_far.steps},
            {"written_by", c.device},
            {"hyper", c.hyper}}},
          {"device", device_json(f.device, f.backend)},
          {"precision", f.precision},
          {"threads", f.threads},
          {"batch", f.batch},
          {"deterministic", f.deterministic},
          {"split", f.split},
          {"images", f.result.images},
          {"accuracy", f.result.accuracy},
          {"loss", f.result.loss},
          {"seconds", f.result.seconds},
          {"machine", machine_json()}};
}

void write_json_atomic(const std::string& path, const nlohmann::json& j) {
  write_text_atomic(path, j.dump(2) + "\n");
}

nlohmann::json read_record(const std::string& path) {
  std::istringstream in(gzio::read_text(path, kMaxRecordBytes));
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
