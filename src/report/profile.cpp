#include "report/profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "bench/flops.h"
#include "bench/peaks.h"
#include "core/error.h"

namespace tb {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::optional<double> Roofline::ridge() const {
  if (!peak_flops || !bandwidth || *bandwidth <= 0) return std::nullopt;
  return *peak_flops / *bandwidth;
}

// ---------------------------------------------------------------------------------------------
// FLOPs and bytes of one node

namespace {

bool has_weights(const Node& n) {
  return n.kind == OpKind::dense || n.kind == OpKind::conv2d;
}

std::string shape_text(const Node& n) {
  if (n.h == 1 && n.w == 1) return std::to_string(n.c);
  return fmt::format("{}x{}x{}", n.c, n.h, n.w);
}

}  // namespace

double node_flops_forward(const Model& m, size_t i, int64_t n) {
  const Node& node = m.nodes[i];
  if (node.in0 < 0) return 0;
  const Node& src = m.nodes[size_t(node.in0)];
  if (node.kind == OpKind::dense) return dense_flops(src.out_size(), node.c) * double(n);
  if (node.kind == OpKind::conv2d)
    return conv2d_flops(src.c, node.c, node.kernel, node.kernel, node.h, node.w) * double(n);
  return 0;
}

double node_flops_backward(const Model& m, size_t i, int64_t n) {
  const Node& node = m.nodes[i];
  if (!has_weights(node)) return 0;
  return (node.in0 == 0 ? 1.0 : 2.0) * node_flops_forward(m, i, n);
}

double node_bytes(const Model& m, size_t i, int64_t n, bool forward_fused_away) {
  const Node& node = m.nodes[i];
  if (node.in0 < 0) return 0;
  const double x = double(n) * double(m.nodes[size_t(node.in0)].out_size());
  const double y = double(n) * double(node.out_size());
  const double w = double(node.param_count);
  const double dx = node.in0 == 0 ? 0 : x;  // the input gets no gradient
  double fwd = 0, bwd = 0;
  switch (node.kind) {
    case OpKind::input:
      break;
    case OpKind::dense:
    case OpKind::conv2d:
      fwd = x + w + y, bwd = y + x + w + dx + w;
      break;
    case OpKind::relu:
      fwd = x + y, bwd = y + y + dx;
      break;
    case OpKind::batchnorm:
      fwd = x + y + w, bwd = x + y + dx + w + w;
      break;
    case OpKind::maxpool:
      fwd = x + 2 * y, bwd = 2 * y + dx;
      break;  // + argmax (int32)
    case OpKind::global_avgpool:
      fwd = x + y, bwd = y + dx;
      break;
    case OpKind::add:
      fwd = x + 2 * y, bwd = 4 * y;
      break;  // dy read twice, two copies written
  }
  if (forward_fused_away) fwd = 0;
  return 4.0 * (fwd + bwd);  // fp32
}

// ---------------------------------------------------------------------------------------------
// Timing

namespace {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct StepRunner {
  Trainer& t;
  int64_t n = 0, batches = 1;
  int64_t counter = 0;

  // Every `batches` steps the cursor goes back to the start of the (unshuffled) training set, as
  // a new epoch with new augmentation seeds.
  void next() {
    if (counter % batches == 0) t.start_epoch(counter / batches + 1);
    ++counter;
  }

  void plain(int64_t steps) {
    for (int64_t s = 0; s < steps; ++s) next(), t.step(n, nullptr);
  }

  // One step timed part by part and node by node (issue_step's split); adds milliseconds into
  // r. A step that could not be timed (a size's first op by op one) is followed by one that is.
  void instrumented(StepTimings& r) {
    for (StepSplit s; s.samples == 0;) {
      next();
      t.issue_step(n, &s, &r.forward_ms, &r.backward_ms);
      r.data_ms += s.data_ms, r.loss_ms += s.loss_ms, r.optimizer_ms += s.optimizer_ms;
    }
  }
};

}  // namespace

StepTimings time_steps(Trainer& t, int64_t steps, int warmup) {
  TB_CHECK(steps > 0, "--steps must be positive");
  Backend& be = t.be;
  StepTimings r;
  const size_t nodes = t.model.nodes.size();
  r.forward_ms.assign(nodes, 0), r.backward_ms.assign(nodes, 0);
  r.relu_fusion = t.relu_fusion;
  r.bn_of_add = t.bn_of_add, r.add_of_bn = t.add_of_bn;
  r.batch = std::min<int64_t>(t.hp.batch, t.train_count);
  r.steps = steps, r.warmup = warmup;
  r.node_timing = be.timers_create ? "device events around each node, the pass queued behind a gate"
                                   : "host clock between synchronizes around each node";

  StepRunner run{t, r.batch, t.train_count / r.batch};

  run.plain(warmup);
  be.synchronize(be.ctx);
  // Rounds of instrumented then plain steps, so that drift (clocks, other processes) hits both.
  const int64_t rounds = std::min<int64_t>(5, steps);
  double plain_ms = 0;
  for (int64_t k = 0; k < rounds; ++k) {
    const int64_t chunk = steps / rounds + (k < steps % rounds ? 1 : 0);
    for (int64_t s = 0; s < chunk; ++s) run.instrumented(r);
    be.synchronize(be.ctx);
    const auto t0 = Clock::now();
    run.plain(chunk);
    be.synchronize(be.ctx);
    plain_ms += ms_since(t0);
  }
  const double k = 1.0 / double(steps);
  for (size_t i = 0; i < nodes; ++i) r.forward_ms[i] *= k, r.backward_ms[i] *= k;
  r.data_ms *= k, r.loss_ms *= k, r.optimizer_ms *= k;
  r.step_ms = plain_ms * k;
  r.how = t.node_notes();
  r.precision = t.node_precisions();
  if (t.host_paced_passes > 0)
    r.node_timing += fmt::format(
        " (in {} of {} passes the gate let go before the host had issued the pass: those ran at "
        "the host's pace)",
        t.host_paced_passes, 2 * steps);
  return r;
}

// ---------------------------------------------------------------------------------------------
// The report

namespace {

void fill_roofline(LayerRow& l, const Roofline& roof) {
  const double flops = l.flops_forward + l.flops_backward;
  const double seconds = l.total_ms() / 1e3;
  l.gflops = flops > 0 && seconds > 0 ? flops / seconds / 1e9 : 0;
  l.intensity = l.bytes > 0 ? flops / l.bytes : 0;
  const std::optional<double> ridge = roof.ridge();
  if (!ridge) {
    l.bound = "unknown";
    return;
  }
  l.bound = flops > 0 && l.intensity >= *ridge ? "compute" : "memory";
  if (seconds <= 0) return;
  if (flops > 0) {
    const double attainable = std::min(*roof.peak_flops, l.intensity * *roof.bandwidth);
    l.roofline_share = flops / seconds / attainable;
  } else {
    l.roofline_share = l.bytes / seconds / *roof.bandwidth;
  }
}

LayerRow layer_row(const Model& m, const StepTimings& t, size_t i) {
  const Node& node = m.nodes[i];
  const ReluFusion into = i > 0 ? t.relu_fusion[i - 1] : ReluFusion::none;  // this ReLU's
  // A BN and the ReLU after its add run inside the add's forward.
  int add_at = i < t.add_of_bn.size() ? t.add_of_bn[i] : -1;
  if (i > 0 && i - 1 < t.bn_of_add.size() && t.bn_of_add[i - 1] >= 0) add_at = int(i - 1);
  const bool fused_away = into != ReluFusion::none || add_at >= 0;
  LayerRow l;
  l.name = node.name, l.op = op_name(node.kind), l.shape = shape_text(node);
  l.forward_ms = t.forward_ms[i], l.backward_ms = t.backward_ms[i];
  l.flops_forward = node_flops_forward(m, i, t.batch);
  l.flops_backward = node_flops_backward(m, i, t.batch);
  l.bytes = node_bytes(m, i, t.batch, fused_away);
  const bool both = t.relu_fusion[i] == ReluFusion::both;
  if (t.relu_fusion[i] != ReluFusion::none)
    l.note =
        fmt::format("{} {} (fused)", both ? "forward and backward include" : "forward includes",
                    m.nodes[i + 1].name);
  if (into != ReluFusion::none)
    l.note = fmt::format("{} fused into {}",
                         into == ReluFusion::both ? "forward and backward" : "forward",
                         m.nodes[i - 1].name);
  if (add_at >= 0) l.note = fmt::format("forward fused into {}", m.nodes[size_t(add_at)].name);
  if (i < t.bn_of_add.size() && t.bn_of_add[i] >= 0)
    l.note = fmt::format("forward includes {} and {} (fused)", m.nodes[size_t(t.bn_of_add[i])].name,
                         m.nodes[i + 1].name);
  if (i < t.how.size() && !t.how[i].empty())
    l.note = l.note.empty() ? t.how[i] : l.note + "; " + t.how[i];
  return l;
}

}  // namespace

ProfileReport build_profile(const Model& m, const StepTimings& timings, const Roofline& roof) {
  TB_CHECK(
      timings.forward_ms.size() == m.nodes.size() && timings.relu_fusion.size() == m.nodes.size(),
      "profile: timings for {} nodes, the model has {}", timings.forward_ms.size(), m.nodes.size());
  // A ReLU fused into its batch norm in both directions has no time of its own (its timer reads
  // only its own overhead): that goes to the BN's row, and the ReLU's row is left out.
  StepTimings t = timings;
  for (size_t i = 1; i < m.nodes.size(); ++i)
    if (t.relu_fusion[i - 1] == ReluFusion::both) {
      t.forward_ms[i - 1] += t.forward_ms[i], t.backward_ms[i - 1] += t.backward_ms[i];
      t.forward_ms[i] = t.backward_ms[i] = 0;
    }
  ProfileReport r;
  r.batch = t.batch, r.steps = t.steps, r.warmup = t.warmup;
  r.step_ms = t.step_ms;
  r.node_timing = t.node_timing;
  r.roof = roof;
  double parts = t.data_ms + t.loss_ms + t.optimizer_ms;
  for (size_t i = 1; i < m.nodes.size(); ++i) {
    LayerRow l = layer_row(m, t, i);
    parts += l.total_ms();
    if (l.total_ms() <= 0 && l.flops_forward <= 0) continue;
    // A node the backend ran in another precision is drawn against that precision's peak.
    Roofline node_roof = roof;
    if (i < t.precision.size() && t.precision[i]) {
      const auto p = roof.other_peaks.find(*t.precision[i]);
      node_roof.peak_flops =
          p != roof.other_peaks.end() ? std::optional<double>(p->second) : std::nullopt;
    }
    fill_roofline(l, node_roof);
    l.share = t.step_ms > 0 ? l.total_ms() / t.step_ms : 0;
    r.layers.push_back(std::move(l));
  }
  std::stable_sort(r.layers.begin(), r.layers.end(), [](const LayerRow& a, const LayerRow& b) {
    return a.total_ms() > b.total_ms();
  });
  r.instrumented_step_ms = parts;
  const double share = t.step_ms > 0 ? 1.0 / t.step_ms : 0;
  r.other = {
      {"data", "load_batch: gather, normalise, labels", t.data_ms, t.data_ms * share},
      {"loss", "softmax cross-entropy and its gradient", t.loss_ms, t.loss_ms * share},
      {"optimizer", "parameter update", t.optimizer_ms, t.optimizer_ms * share},
      {"unattributed", "measured step - sum of the parts (timers, synchronizes, noise)",
       t.step_ms - parts, (t.step_ms - parts) * share},
  };
  return r;
}

// ---------------------------------------------------------------------------------------------
// Roofline pieces

std::optional<double> gpu_memory_bandwidth(std::string_view device_name, std::string* source) {
  struct Row {
    const char* peaks_name;  // GpuPeaks::name of the device
    double bytes_per_s;
    const char* source;
  };
  static const Row kRows[] = {
      {"H100 SXM5", 3.35e12, "datasheet: H100 SXM5 HBM3 3.35 TB/s"},
      {"H100 PCIe", 2.0e12, "datasheet: H100 PCIe HBM2e 2.0 TB/s"},
      {"H100 NVL", 3.9e12, "datasheet: H100 NVL HBM3 3.9 TB/s"},
      {"H200 SXM", 4.8e12, "datasheet: H200 HBM3e 4.8 TB/s"},
      {"H200 NVL", 4.8e12, "datasheet: H200 NVL HBM3e 4.8 TB/s"},
      {"A100 SXM", 2.0e12, "datasheet: A100 80GB 2.0 TB/s (the 40GB part: 1.56)"},
      {"A100 PCIe", 2.0e12, "datasheet: A100 80GB 2.0 TB/s (the 40GB part: 1.56)"},
  };
  const std::optional<GpuPeaks> g = gpu_peaks(device_name);
  if (!g) return std::nullopt;
  for (const Row& r : kRows) {
    if (g->name != r.peaks_name) continue;
    if (source) *source = r.source;
    return r.bytes_per_s;
  }
  return std::nullopt;
}

double measure_memory_bandwidth(int threads, double seconds_budget, std::string* source) {
  const size_t bytes = size_t(64) << 20;
  std::vector<char> a(bytes, 1), b(bytes, 2);  // filled: every page is touched before timing
  const int nt = std::max(1, threads);
  auto copy_once = [&] {
    const auto t0 = Clock::now();
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int k = 0; k < nt; ++k) {
      const size_t lo = bytes * size_t(k) / size_t(nt), hi = bytes * size_t(k + 1) / size_t(nt);
      std::memcpy(b.data() + lo, a.data() + lo, hi - lo);
    }
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  copy_once();
  const auto start = Clock::now();
  double best = copy_once();
  int runs = 1;
  while (runs < 3 || std::chrono::duration<double>(Clock::now() - start).count() < seconds_budget) {
    best = std::min(best, copy_once());
    if (++runs >= 100) break;
  }
  const double bw = 2.0 * double(bytes) / best;
  if (source)
    *source = fmt::format("measured: memcpy 64 MiB, {} thread{}, best of {} (read + write)", nt,
                          nt == 1 ? "" : "s", runs);
  return bw;
}

// ---------------------------------------------------------------------------------------------
// Text, JSON

namespace {

std::string fixed(double v, int digits) {
  return fmt::format("{:.{}f}", v, digits);
}

std::vector<std::string> layer_cells(const LayerRow& l) {
  const bool has_flops = l.flops_forward + l.flops_backward > 0;
  return {l.name,
          l.op,
          l.shape,
          fixed(l.forward_ms, 4),
          fixed(l.backward_ms, 4),
          fixed(l.total_ms(), 4),
          fixed(100 * l.share, 1) + "%",
          fixed(l.flops_forward / 1e6, 2),
          fixed(l.flops_backward / 1e6, 2),
          fixed(l.bytes / 1e6, 2),
          has_flops ? fixed(l.gflops, 1) : "-",
          has_flops ? fixed(l.intensity, 2) : "0",
          l.bound,
          l.roofline_share ? fixed(100 * *l.roofline_share, 1) + "%" : "-",
          l.note};
}

std::vector<std::string> other_cells(const std::string& name, const std::string& what, double ms,
                                     double share) {
  return {name, "", "", "", "", fixed(ms, 4), fixed(100 * share, 1) + "%", "", "",
          "",   "", "", "", "", what};
}

}  // namespace

std::vector<std::vector<std::string>> profile_table(const ProfileReport& r) {
  std::vector<std::vector<std::string>> t = {{"layer", "op", "output", "fwd ms", "bwd ms",
                                              "total ms", "share", "fwd MFLOP", "bwd MFLOP", "MB",
                                              "GFLOP/s", "FLOP/B", "bound", "roof %", "note"}};
  double flops_f = 0, flops_b = 0, bytes = 0, fwd = 0, bwd = 0;
  for (const LayerRow& l : r.layers) {
    t.push_back(layer_cells(l));
    flops_f += l.flops_forward, flops_b += l.flops_backward, bytes += l.bytes;
    fwd += l.forward_ms, bwd += l.backward_ms;
  }
  std::vector<std::string> sum = {"layers",
                                  "",
                                  "",
                                  fixed(fwd, 4),
                                  fixed(bwd, 4),
                                  fixed(fwd + bwd, 4),
                                  fixed(r.step_ms > 0 ? 100 * (fwd + bwd) / r.step_ms : 0, 1) + "%",
                                  fixed(flops_f / 1e6, 2),
                                  fixed(flops_b / 1e6, 2),
                                  fixed(bytes / 1e6, 2),
                                  "",
                                  "",
                                  "",
                                  "",
                                  "sum of the rows above"};
  t.push_back(sum);
  for (const OtherRow& o : r.other) t.push_back(other_cells(o.key, o.what, o.ms, o.share));
  t.push_back(other_cells("step", "measured, without per-node timing", r.step_ms, 1.0));
  return t;
}

namespace {

std::string render_text_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(rows.front().size(), 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      const bool left = i <= 2 || i == 12 || i + 1 == row.size();
      line +=
          left ? fmt::format("{:<{}}", row[i], width[i]) : fmt::format("{:>{}}", row[i], width[i]);
      if (i + 1 < row.size()) line += "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string roof_text(const Roofline& roof) {
  const std::string peak = roof.peak_flops ? fmt::format("peak {:.1f} GFLOP/s ({})",
                                                         *roof.peak_flops / 1e9, roof.peak_source)
                                           : "peak unknown";
  const std::string bw = roof.bandwidth ? fmt::format("memory {:.1f} GB/s ({})",
                                                      *roof.bandwidth / 1e9, roof.bandwidth_source)
                                        : "memory bandwidth unknown";
  const std::optional<double> ridge = roof.ridge();
  return fmt::format("roofline: {}; {}; ridge {}", peak, bw,
                     ridge ? fmt::format("{:.1f} FLOP/byte", *ridge) : "unknown");
}

}  // namespace

std::string format_profile_text(const ProfileReport& r) {
  std::string out = fmt::format(
      "{} on {} ({}), {}, batch {}, {} timed steps of each kind after {} warm-up steps{}\n",
      r.workload, r.device, r.device_kind, r.precision, r.batch, r.steps, r.warmup,
      r.threads > 0 ? fmt::format(", {} thread{}", r.threads, r.threads == 1 ? "" : "s") : "");
  out += roof_text(r.roof) + "\n";
  out += fmt::format(
      "step: {:.4f} ms measured without per-node timing; {:.4f} ms with it (sum of the parts)\n",
      r.step_ms, r.instrumented_step_ms);
  if (!r.node_timing.empty()) out += "nodes timed by " + r.node_timing + "\n";
  out += "\n";
  out += render_text_table(profile_table(r));
  out +=
      "\nFLOPs per step (whole batch): 2 x multiply-adds for dense and conv, backward = 2 x "
      "forward "
      "(1 x for the layer that reads the input), other ops 0. MB: estimated fp32 traffic, forward "
      "+ backward. roof %: achieved over what the roofline allows at that intensity.\n";
  return out;
}

json profile_json(const ProfileReport& r) {
  json layers = json::array();
  for (const LayerRow& l : r.layers)
    layers.push_back(
        {{"name", l.name},
         {"op", l.op},
         {"shape", l.shape},
         {"forward_ms", l.forward_ms},
         {"backward_ms", l.backward_ms},
         {"flops_forward", l.flops_forward},
         {"flops_backward", l.flops_backward},
         {"bytes", l.bytes},
         {"gflops", l.gflops},
         {"intensity", l.intensity},
         {"bound", l.bound},
         {"roofline_share", l.roofline_share ? json(*l.roofline_share) : json(nullptr)},
         {"share", l.share},
         {"note", l.note}});
  json other = json::object();
  for (const OtherRow& o : r.other)
    other[o.key] = {{"ms", o.ms}, {"share", o.share}, {"what", o.what}};
  auto opt = [](const std::optional<double>& v) { return v ? json(*v) : json(nullptr); };
  return {{"trainbench_version", TRAINBENCH_VERSION},
          {"workload", r.workload},
          {"device", r.device},
          {"device_kind", r.device_kind},
          {"precision", r.precision},
          {"batch", r.batch},
          {"steps", r.steps},
          {"warmup_steps", r.warmup},
          {"threads", r.threads},
          {"step_ms", r.step_ms},
          {"instrumented_step_ms", r.instrumented_step_ms},
          {"node_timing", r.node_timing},
          {"peak_flops_per_s", opt(r.roof.peak_flops)},
          {"peak_source", r.roof.peak_source},
          {"bandwidth_bytes_per_s", opt(r.roof.bandwidth)},
          {"bandwidth_source", r.roof.bandwidth_source},
          {"ridge_flop_per_byte", opt(r.roof.ridge())},
          {"layers", layers},
          {"other", other}};
}

namespace {

std::optional<double> opt_num(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

double num_or0(const json& j, const char* key) {
  return opt_num(j, key).value_or(0);
}

// 0 also where the number is negative or too large for a count (a damaged file).
int64_t count_or0(const json& j, const char* key) {
  const double v = num_or0(j, key);
  return v > 0 && v < 0x1p63 ? int64_t(v) : 0;
}

std::string str_or(const json& j, const char* key, const std::string& dflt = "") {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : dflt;
}

}  // namespace

ProfileReport profile_from_json(const json& j) {
  TB_CHECK(j.is_object() && j.contains("layers") && j["layers"].is_array(),
           "not a trainbench profile (no 'layers')");
  ProfileReport r;
  r.workload = str_or(j, "workload"), r.device = str_or(j, "device");
  r.device_kind = str_or(j, "device_kind"), r.precision = str_or(j, "precision");
  r.batch = count_or0(j, "batch"), r.steps = count_or0(j, "steps");
  r.warmup = count_or0(j, "warmup_steps"), r.threads = int(count_or0(j, "threads"));
  r.step_ms = num_or0(j, "step_ms"), r.instrumented_step_ms = num_or0(j, "instrumented_step_ms");
  r.node_timing = str_or(j, "node_timing");
  r.roof.peak_flops = opt_num(j, "peak_flops_per_s");
  r.roof.bandwidth = opt_num(j, "bandwidth_bytes_per_s");
  r.roof.peak_source = str_or(j, "peak_source"),
  r.roof.bandwidth_source = str_or(j, "bandwidth_source");
  for (const json& l : j["layers"]) {
    if (!l.is_object()) continue;
    LayerRow row;
    row.name = str_or(l, "name"), row.op = str_or(l, "op"), row.shape = str_or(l, "shape");
    row.note = str_or(l, "note"), row.bound = str_or(l, "bound", "unknown");
    row.forward_ms = num_or0(l, "forward_ms"), row.backward_ms = num_or0(l, "backward_ms");
    row.flops_forward = num_or0(l, "flops_forward"),
    row.flops_backward = num_or0(l, "flops_backward");
    row.bytes = num_or0(l, "bytes"), row.gflops = num_or0(l, "gflops");
    row.intensity = num_or0(l, "intensity"), row.share = num_or0(l, "share");
    row.roofline_share = opt_num(l, "roofline_share");
    r.layers.push_back(std::move(row));
  }
  if (j.contains("other") && j["other"].is_object()) {
    for (const char* key : {"data", "loss", "optimizer", "unattributed"}) {
      if (!j["other"].contains(key) || !j["other"][key].is_object()) continue;
      const json& o = j["other"][key];
      r.other.push_back({key, str_or(o, "what"), num_or0(o, "ms"), num_or0(o, "share")});
    }
  }
  return r;
}

}  // namespace tb
