#include "report/compare.h"

#include "models/cost.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <iterator>
#include <sstream>

#include "bench/peaks.h"
#include "core/error.h"
#include "core/gzio.h"
#include "core/json_depth.h"
#include "report/record.h"

namespace tb {

using nlohmann::json;

namespace {

// The value at a path of object keys, or nullptr when any step is missing or not an object.
const json* find_path(const json& j, std::initializer_list<const char*> path) {
  const json* p = &j;
  for (const char* key : path) {
    if (!p->is_object()) return nullptr;
    auto it = p->find(key);
    if (it == p->end()) return nullptr;
    p = &*it;
  }
  return p;
}

std::optional<double> num(const json& j, std::initializer_list<const char*> path) {
  const json* v = find_path(j, path);
  if (!v || !v->is_number()) return std::nullopt;
  const double d = v->get<double>();
  if (!std::isfinite(d)) return std::nullopt;
  return d;
}

// A count: 0 when missing, negative or too large for one (a damaged record).
int64_t count(const json& j, std::initializer_list<const char*> path) {
  const std::optional<double> v = num(j, path);
  return v && *v > 0 && *v < 0x1p63 ? int64_t(*v) : 0;
}

// Strings as they are, numbers and booleans as JSON text, "" when missing or null.
std::string text(const json& j, std::initializer_list<const char*> path) {
  const json* v = find_path(j, path);
  if (!v || v->is_null()) return "";
  if (v->is_string()) return v->get<std::string>();
  if (v->is_number() || v->is_boolean()) return v->dump();
  return "";
}

Precision precision_or_fp32(const std::string& s) {
  if (s == "tf32") return Precision::tf32;
  if (s == "bf16") return Precision::bf16;
  return Precision::fp32;
}

std::string peak_text(double flops) {
  return flops >= 1e12 ? fmt::format("{:.1f} TFLOP/s", flops / 1e12)
                       : fmt::format("{:.1f} GFLOP/s", flops / 1e9);
}

std::string name_of(const CompareEntry& e) {
  return e.file.empty() ? e.label : e.file;
}

// "pytorch 2.11.0 channels_last compile", "trainbench 0.x cuda nhwc": the settings that change
// how the same workload and precision run are part of the name.
std::string record_label(const json& r) {
  if (text(r, {"peer"}) == "pytorch") {
    std::string v = text(r, {"torch_version"});
    if (v.empty()) v = text(r, {"versions", "torch"});
    std::string label = "pytorch " + (v.empty() ? std::string("(version unknown)") : v);
    if (text(r, {"peer_options", "channels_last"}) == "true") label += " channels_last";
    if (text(r, {"peer_options", "compile"}) == "true") label += " compile";
    return label;
  }
  std::string label = "trainbench " + text(r, {"trainbench_version"});
  const std::string backend = text(r, {"device", "backend"});
  if (!backend.empty()) label += " " + backend;
  if (text(r, {"conv_layout"}) == "nhwc") label += " nhwc";
  // A CPU run on the layout before NHWC became its default (--nchw) says so; older records,
  // which have no `activations`, do not.
  if (backend == "cpu-onednn" && text(r, {"activations"}) == "nchw") label += " nchw";
  // A CPU bf16 run with its maps in fp32 (--fp32-maps); older records have no `bf16_maps`.
  if (backend == "cpu-onednn" && text(r, {"precision"}) == "bf16" &&
      text(r, {"activations"}) == "nhwc" && num(r, {"bf16_maps"}) == 0.0)
    label += " fp32-maps";
  if (const int n = int(num(r, {"ranks", "world_size"}).value_or(1)); n > 1)
    label += fmt::format(" x{} ranks", n);
  return label;
}

// The MFU where the record has none but a peak is known: its training FLOPs per image times the
// steady throughput, over the peak.
void fill_mfu(CompareEntry& e, const json& r) {
  e.mfu = num(r, {"flops", "mfu"});
  if (e.mfu || !e.peak || !e.images_per_s) return;
  // PyTorch peers count 3 x forward; the contract's count (no input gradient for layer one) is
  // what trainbench's MFU uses, so prefer it.
  std::optional<double> per_image = num(r, {"flops", "per_train_image_contract"});
  if (!per_image) per_image = num(r, {"flops", "per_train_image"});
  if (per_image) e.mfu = mfu(*per_image * *e.images_per_s, e.peak);
  if (e.mfu && *e.mfu > 1) e.mfu.reset();  // above the peak: the peak is wrong, not the run
}

void fill_peak_and_mfu(CompareEntry& e, const json& r) {
  e.peak = num(r, {"flops", "peak_datasheet_per_s"});
  // A record's peak is one rank's device's: the run had world_size of them.
  if (e.peak) *e.peak *= e.world_size;
  e.peak_source = text(r, {"flops", "peak_datasheet_source"});
  if (!e.peak && e.device_kind == "cuda") {
    if (auto p = gpu_peak(e.device, precision_or_fp32(e.precision))) {
      e.peak = p->flops_per_s, e.peak_source = p->source, e.peak_looked_up = true;
    }
  }
  fill_mfu(e, r);
}

void fill_utilisation(CompareEntry& e, const json& r) {
  const json* train = find_path(r, {"utilisation", "mean", "by_phase", "train"});
  const json* mean = find_path(r, {"utilisation", "mean"});
  const json* m = train ? train : mean;
  if (!m) return;
  e.cpu_pct = num(*m, {"proc_cpu_pct"});
  e.cpu_what = "process";
  if (!e.cpu_pct) e.cpu_pct = num(*m, {"cpu_busy_pct"}), e.cpu_what = "machine";
  if (!e.cpu_pct) e.cpu_what.clear();
  e.gpu_pct = num(*m, {"gpu_busy_pct"});
}

std::string augment_of(const json& r) {
  std::string a = text(r, {"hyper", "augment"});
  if (a.empty()) a = text(r, {"augment"});
  return a.empty() ? "false" : a;
}

}  // namespace

bool is_profile_json(const json& j) {
  return j.is_object() && j.contains("layers") && j["layers"].is_array();
}

json read_compare_input(const std::string& path) {
  return parse_compare_input(gzio::read_text(path, kMaxRecordBytes), path);
}

json parse_compare_input(const std::string& text, const std::string& path) {
  json j = json::parse(text, nullptr, false);
  TB_CHECK(!json_nests_deeper(j), "{}: nested more than {} levels deep (not a record or profile)",
           path, kMaxJsonDepth);
  if (is_profile_json(j)) {
    TB_CHECK(j.contains("workload") && j["workload"].is_string(),
             "{}: profile without a 'workload'", path);
    return j;
  }
  // Everything else goes through read_record, whose messages name the file and the problem.
  std::istringstream in(text);
  return read_record(in, path);
}

CompareEntry entry_from_record(const json& r, const std::string& file) {
  CompareEntry e;
  e.file = file;
  e.record = r;
  e.workload = text(r, {"workload"});
  e.device = text(r, {"device", "name"});
  if (e.device.empty()) e.device = text(r, {"device"});
  e.device_kind = text(r, {"device", "kind"});
  e.precision = text(r, {"precision"});
  e.label = record_label(r);
  e.train_test_s = num(r, {"times_s", "train_test"});
  TB_CHECK(e.train_test_s && *e.train_test_s > 0, "{}: no positive times_s.train_test", file);
  e.images_per_s = num(r, {"throughput", "train_images_per_s_steady"});
  e.test_accuracy = num(r, {"accuracy", "test"});
  e.world_size = int(num(r, {"ranks", "world_size"}).value_or(1));
  fill_peak_and_mfu(e, r);
  fill_utilisation(e, r);
  e.batch = text(r, {"batch"});
  e.epochs = text(r, {"epochs"});
  e.steps = text(r, {"steps"});
  // A resumed run's times cover only the epochs after its checkpoint: never the same work as a
  // whole run's, so the settings check tells them apart.
  const int64_t resumed_epochs = count(r, {"resumed_epochs"});
  const int64_t resumed_steps = count(r, {"resumed_steps"});
  if (resumed_epochs > 0 || resumed_steps > 0)
    e.steps += resumed_steps == 0 ? fmt::format(" after {} resumed epochs", resumed_epochs)
                                  : fmt::format(" after {} resumed epochs and {} steps",
                                                resumed_epochs, resumed_steps);
  if (text(r, {"interrupted"}) == "true") e.steps += " (interrupted)";
  e.augment = augment_of(r);
  e.partial = text(r, {"stopped_by_steps"}) == "true" || text(r, {"interrupted"}) == "true" ||
              find_path(r, {"projected"});
  e.projected_train_test_s = num(r, {"projected", "times_s", "train_test"});
  if (e.projected_train_test_s) {
    e.whole_steps = text(r, {"projected", "steps"});
    e.projected_from = fmt::format("{} of {} training images, {} of {} test images",
                                   text(r, {"projected", "from", "train_images"}),
                                   text(r, {"projected", "from", "of_train_images"}),
                                   text(r, {"projected", "from", "test_images"}),
                                   text(r, {"projected", "from", "of_test_images"}));
  }
  return e;
}

std::vector<CompareEntry> seed_entries(const std::string& workload) {
  struct Figure {
    const char* workload;
    const char* device;
    const char* peak_name;  // the name peaks.h knows the device by
    const char* software;
    double seconds;
    const char* gpu_note;
    int batch, steps;
    double train_images;  // an epoch's
  };
  static const Figure kFigures[] = {
      {"fashion-mlp", "RTX 2080 Ti", "RTX 2080 Ti", "TF 2.4, CUDA", 7.78, "", 32, 18750, 60000},
      {"fashion-mlp", "Apple M1 (GPU)", "Apple M1", "tensorflow_macos", 6.70, "", 32, 18750, 60000},
      {"resnet50-cifar10", "RTX 2080 Ti", "RTX 2080 Ti", "TF 2.4, CUDA", 418.73, "65-75 (article)",
       128, 3910, 50000},
      {"resnet50-cifar10", "Apple M1 (GPU)", "Apple M1", "tensorflow_macos", 2286.16, "", 128, 3910,
       50000},
  };
  std::vector<CompareEntry> out;
  for (const Figure& f : kFigures) {
    if (workload != f.workload) continue;
    CompareEntry e;
    e.label = fmt::format("seed article: {}", f.software);
    e.device = f.device;
    e.device_kind = "gpu";
    e.precision = "fp32";
    e.workload = f.workload;
    e.train_test_s = f.seconds;
    // Ten epochs' images over the published train+test time: the test pass and the warm-up are
    // inside that time, so this is a lower bound on the machine's training rate.
    e.images_per_s = 10 * f.train_images / f.seconds;
    e.images_per_s_derived = true;
    if (auto p = gpu_peak(f.peak_name, Precision::fp32))
      e.peak = p->flops_per_s, e.peak_source = p->source;
    e.util_note = f.gpu_note;
    e.batch = std::to_string(f.batch), e.epochs = "10", e.steps = std::to_string(f.steps);
    e.augment = "false";
    e.record = nullptr;
    out.push_back(std::move(e));
  }
  return out;
}

namespace {

std::string workload_difference(const std::vector<CompareEntry>& rows) {
  for (const CompareEntry& e : rows) {
    if (e.workload != rows.front().workload)
      return fmt::format("records are of different workloads: {} is {}, {} is {}",
                         name_of(rows.front()), rows.front().workload, name_of(e), e.workload);
  }
  return "";
}

}  // namespace

std::string settings_difference(const std::vector<CompareEntry>& rows) {
  if (rows.empty()) return "";
  if (std::string w = workload_difference(rows); !w.empty()) return w;
  struct Key {
    const char* name;
    std::string CompareEntry::*field;
  };
  const Key keys[] = {{"batch", &CompareEntry::batch},
                      {"epochs", &CompareEntry::epochs},
                      {"steps", &CompareEntry::steps},
                      {"augment", &CompareEntry::augment}};
  std::vector<std::string> parts;
  for (const Key& k : keys) {
    const CompareEntry* ref = nullptr;
    for (const CompareEntry& e : rows) {
      const std::string& v = e.*k.field;
      if (v.empty()) continue;
      if (!ref) {
        ref = &e;
      } else if (v != ref->*k.field) {
        parts.push_back(fmt::format("{} ({}: {}, {}: {})", k.name, name_of(*ref), ref->*k.field,
                                    name_of(e), v));
        break;
      }
    }
  }
  if (parts.empty()) return "";
  return "records differ in settings that change the work: " +
         fmt::format("{}", fmt::join(parts, ", "));
}

void fill_ratios(std::vector<CompareEntry>& rows) {
  if (rows.empty()) return;
  const CompareEntry first = rows.front();
  for (CompareEntry& e : rows) {
    e.time_ratio.reset(), e.peak_ratio.reset(), e.delivered.reset();
    if (e.train_test_s && first.train_test_s) e.time_ratio = *e.train_test_s / *first.train_test_s;
    if (e.peak && first.peak && *first.peak > 0) e.peak_ratio = *e.peak / *first.peak;
    if (e.time_ratio && e.peak_ratio && *e.time_ratio > 0 && *e.peak_ratio > 0)
      e.delivered = (1.0 / *e.time_ratio) / *e.peak_ratio;
  }
}

namespace {

void add_seed_rows(CompareTable& t) {
  std::vector<CompareEntry> seeds = seed_entries(t.workload);
  if (seeds.empty()) {
    t.notes.push_back(
        fmt::format("--with-seed: the seed article has no figures for {}", t.workload));
    return;
  }
  const std::string diff = settings_difference({t.rows.front(), seeds.front()});
  if (!diff.empty())
    t.notes.push_back(fmt::format(
        "the seed article's rows are full 10-epoch runs; {}: their ratios compare different work",
        diff));
  t.notes.push_back(
      "the seed article's images/s are derived: 10 epochs of the training set over its "
      "train+test time, a lower bound on the training rate (the test pass and warm-up are inside "
      "that time)");
  for (CompareEntry& e : seeds) t.rows.push_back(std::move(e));
}

// A row whose record has no peak (a PyTorch peer on a CPU, whose peak trainbench estimates from
// the machine) takes the peak of a row on the same device, precision and thread count, so its
// peak ratio and MFU are known too.
void share_peaks(CompareTable& t) {
  for (CompareEntry& e : t.rows) {
    if (e.peak || e.record.is_null()) continue;
    for (size_t j = 0; j < t.rows.size(); ++j) {
      const CompareEntry& o = t.rows[j];
      if (!o.peak || o.peak_shared_from || o.record.is_null() || o.device != e.device ||
          o.device_kind != e.device_kind ||
          precision_or_fp32(o.precision) != precision_or_fp32(e.precision) ||
          text(o.record, {"threads"}) != text(e.record, {"threads"}))
        continue;
      e.peak = o.peak, e.peak_source = o.peak_source, e.peak_shared_from = int(j) + 1;
      fill_mfu(e, e.record);
      break;
    }
  }
}

// Scaling efficiency = throughput_N / (N x throughput_1), against the first 1-rank row on the
// same device (WORKLOADS.md).
void add_scaling(CompareTable& t) {
  for (CompareEntry& e : t.rows) {
    if (e.world_size <= 1 || !e.images_per_s) continue;
    for (size_t j = 0; j < t.rows.size(); ++j) {
      const CompareEntry& one = t.rows[j];
      if (one.world_size != 1 || one.record.is_null() || !one.images_per_s ||
          *one.images_per_s <= 0 || one.device != e.device || one.device_kind != e.device_kind)
        continue;
      e.scaling_efficiency = *e.images_per_s / (e.world_size * *one.images_per_s);
      e.scaling_against = int(j) + 1;
      break;
    }
  }
  for (size_t i = 0; i < t.rows.size(); ++i) {
    const CompareEntry& e = t.rows[i];
    if (e.scaling_efficiency)
      t.notes.push_back(
          fmt::format("#{} {} ranks: scaling efficiency {:.3f} against #{} (1 rank, same device): "
                      "throughput / ({} x #{}'s)",
                      i + 1, e.world_size, *e.scaling_efficiency, e.scaling_against, e.world_size,
                      e.scaling_against));
    else if (e.world_size > 1)
      t.notes.push_back(fmt::format(
          "#{} {} ranks: no 1-rank record of the same device to give its scaling efficiency", i + 1,
          e.world_size));
  }
}

void add_peak_notes(CompareTable& t) {
  for (size_t i = 0; i < t.rows.size(); ++i) {
    const CompareEntry& e = t.rows[i];
    if (e.peak)
      t.notes.push_back(fmt::format(
          "#{} peak {}: {}{}", i + 1, peak_text(*e.peak), e.peak_source,
          e.peak_looked_up     ? " (looked up by device name: the record has no peak)"
          : e.peak_shared_from ? fmt::format(" (#{}'s: the same device, precision and threads; "
                                             "the record has no peak)",
                                             e.peak_shared_from)
                               : std::string()));
    else
      t.notes.push_back(fmt::format("#{} peak unknown ({} {} is not in the datasheet table)", i + 1,
                                    e.device, e.precision));
  }
}

CompareTable* table_for(Comparison& c, const std::string& workload) {
  for (CompareTable& t : c.tables)
    if (t.workload == workload) return &t;
  return nullptr;
}

}  // namespace

namespace {

// A partial run's row shows its projected time where the table holds a whole run to set it
// against (a record, or the seed article's rows): whole run against whole run. Among partial
// runs only, their measured times compare as they are.
void use_projections(CompareTable& t, bool seed_rows) {
  bool whole = seed_rows;
  for (const CompareEntry& e : t.rows) whole = whole || !e.partial;
  if (!whole) return;
  for (size_t i = 0; i < t.rows.size(); ++i) {
    CompareEntry& e = t.rows[i];
    if (!e.projected_train_test_s) continue;
    e.train_test_s = e.projected_train_test_s, e.steps = e.whole_steps, e.projected = true;
    t.notes.push_back(fmt::format(
        "#{} train+test time projected to the whole run from {} (the training time plus the "
        "rest at the steady rate; hatched in the charts)",
        i + 1, e.projected_from));
  }
}

// Settings check, seed rows, ratios and notes of one workload's table.
void finish_table(CompareTable& t, const std::string& across, const CompareSettings& s) {
  use_projections(t, s.with_seed && !seed_entries(t.workload).empty());
  const std::string diff = settings_difference(t.rows);
  TB_CHECK(diff.empty() || s.force, "{}; --force compares them anyway", diff);
  if (!across.empty()) t.notes.push_back("--force: " + across + ": one table per workload");
  if (!diff.empty()) t.notes.push_back("--force: " + diff + ": time ratios compare different work");
  share_peaks(t);
  if (s.with_seed) add_seed_rows(t);
  fill_ratios(t.rows);
  add_peak_notes(t);
  add_scaling(t);
}

void attach_profile(Comparison& c, json p, const std::string& file) {
  const std::string workload = text(p, {"workload"});
  CompareTable* t = table_for(c, workload);
  TB_CHECK(t, "{}: a profile of '{}', but no record of that workload among the inputs", file,
           workload);
  p["file"] = file;
  t->profiles.push_back(std::move(p));
}

}  // namespace

Comparison compare_inputs(const std::vector<json>& inputs, const std::vector<std::string>& files,
                          const CompareSettings& s) {
  TB_CHECK(inputs.size() == files.size(), "compare: {} inputs but {} file names", inputs.size(),
           files.size());
  std::vector<CompareEntry> records;
  std::vector<std::pair<json, std::string>> profiles;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (is_profile_json(inputs[i])) {
      profiles.emplace_back(inputs[i], files[i]);
      continue;
    }
    records.push_back(entry_from_record(inputs[i], files[i]));
    if (const json* p = find_path(inputs[i], {"profile"}); p && is_profile_json(*p))
      profiles.emplace_back(*p, files[i]);
  }
  TB_CHECK(!records.empty(), "compare: no result records among the inputs (only profiles)");
  const std::string across = workload_difference(records);
  TB_CHECK(across.empty() || s.force, "{}; --force compares them anyway, one table per workload",
           across);

  Comparison c;
  c.files = files;
  for (CompareEntry& e : records) {
    if (!table_for(c, e.workload)) c.tables.push_back(CompareTable{e.workload, {}, {}, {}});
    table_for(c, e.workload)->rows.push_back(std::move(e));
  }
  for (CompareTable& t : c.tables) finish_table(t, across, s);
  for (auto& [p, file] : profiles) attach_profile(c, p, file);
  return c;
}

Comparison compare_files(const std::vector<std::string>& files, const CompareSettings& s) {
  TB_CHECK(!files.empty(), "compare: give at least one result record");
  std::vector<json> inputs;
  for (const std::string& f : files) inputs.push_back(read_compare_input(f));
  return compare_inputs(inputs, files, s);
}

}  // namespace tb
