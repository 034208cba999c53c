#include "report/profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "bench/peaks.h"
#include "core/error.h"
#include "models/cost.h"

namespace tb {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::optional<double> Roofline::ridge() const {
  if (!peak_flops || !bandwidth || *bandwidth <= 0) return std::nullopt;
  return *peak_flops / *bandwidth;
}

// ---------------------------------------------------------------------------------------------
// The report

namespace {

std::string shape_text(const Node& n) {
  if (n.h == 1 && n.w == 1) return std::to_string(n.c);
  return fmt::format("{}x{}x{}", n.c, n.h, n.w);
}

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

// What the plan fused into node i's row, or into which other row node i's forward went.
std::string fusion_note(const Model& m, const Plan& plan, size_t i) {
  const int fs = plan.forward_of[i];
  if (fs < 0) return "";
  const ForwardStep& s = plan.forward[size_t(fs)];
  if (s.covers.size() < 2) return "";
  auto name = [&](int n) { return m.nodes[size_t(n)].name; };
  const bool both = s.op == ForwardOp::bn_relu;  // the ReLU's backward runs in BN's too
  if (s.node != int(i))
    return fmt::format("{} fused into {}", both ? "forward and backward" : "forward", name(s.node));
  if (s.op == ForwardOp::bn_add_relu)
    return fmt::format("forward includes {} and {} (fused)", name(s.bn), name(s.writes));
  return fmt::format("{} {} (fused)", both ? "forward and backward include" : "forward includes",
                     name(s.writes));
}

LayerRow layer_row(const Model& m, const Plan& plan, const StepTimings& t, size_t i) {
  const Node& node = m.nodes[i];
  const int fs = plan.forward_of[i];
  const bool fused_away = fs >= 0 && plan.forward[size_t(fs)].node != int(i);
  const NodeCost cost = node_cost(m, i, t.batch);
  LayerRow l;
  l.name = node.name, l.op = op_name(node.kind), l.shape = shape_text(node);
  l.forward_ms = t.nodes.forward_ms[i], l.backward_ms = t.nodes.backward_ms[i];
  l.flops_forward = cost.flops_forward, l.flops_backward = cost.flops_backward;
  l.bytes = (fused_away ? 0 : cost.bytes_forward) + cost.bytes_backward;
  l.note = fusion_note(m, plan, i);
  if (i < t.how.size() && !t.how[i].empty())
    l.note = l.note.empty() ? t.how[i] : l.note + "; " + t.how[i];
  return l;
}

}  // namespace

ProfileReport build_profile(const Model& m, const Plan& plan, const StepTimings& t,
                            const Roofline& roof) {
  TB_CHECK(t.nodes.forward_ms.size() == m.nodes.size() && plan.forward_of.size() == m.nodes.size(),
           "profile: timings for {} nodes, the model has {}", t.nodes.forward_ms.size(),
           m.nodes.size());
  ProfileReport r;
  r.batch = t.batch, r.steps = t.steps, r.warmup = t.warmup;
  r.step_ms = t.step_ms;
  r.node_timing = t.node_timing;
  r.fused_step = t.fused_step;
  r.roof = roof;
  double parts = t.data_ms + t.loss_ms + t.optimizer_ms;
  for (size_t i = 1; i < m.nodes.size(); ++i) {
    LayerRow l = layer_row(m, plan, t, i);
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
      {"unattributed",
       t.fused_step ? "the fused step - the parts issued one by one (below 0: what fusing saves)"
                    : "measured step - sum of the parts (timers, synchronizes, noise)",
       t.step_ms - parts, (t.step_ms - parts) * share},
  };
  return r;
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
  if (r.fused_step)
    out += fmt::format(
        "step: {:.4f} ms measured as training runs it, one fused MLP step; {:.4f} ms with its ops "
        "issued one by one and timed (sum of the parts)\n",
        r.step_ms, r.instrumented_step_ms);
  else
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
          {"fused_step", r.fused_step},
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
  const auto fused = j.find("fused_step");
  r.fused_step = fused != j.end() && fused->is_boolean() && fused->get<bool>();
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
