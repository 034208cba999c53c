// `trainbench profile`: where a training step's time goes, node by node, against the device's
// roofline. The times come from the executor (train/step_timing.h); this file only formats them.
// The table's rows are the nodes, then data, loss, optimizer and "unattributed" (the measured
// step minus everything above: timer and synchronize overhead, noise; it can be negative), so the
// rows add up to the measured step. FLOPs and bytes are the cost model's (models/cost.h); a node
// fused into another plan step's forward moves no bytes of its own there.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "models/model.h"
#include "train/plan.h"
#include "train/step_timing.h"

namespace tb {

struct Roofline {
  std::optional<double> peak_flops;  // FLOP/s for the precision used
  // FLOP/s of the precisions some nodes ran in instead (StepTimings::precision).
  std::map<Precision, double> other_peaks;
  std::optional<double> bandwidth;  // bytes/s of device memory
  std::string peak_source, bandwidth_source;
  std::optional<double> ridge() const;  // FLOP/byte where the roof turns flat
};

struct LayerRow {
  std::string name, op, shape, note;
  double forward_ms = 0, backward_ms = 0;
  double flops_forward = 0, flops_backward = 0;  // per step (the whole batch)
  double bytes = 0;                              // per step, forward + backward
  double gflops = 0;                             // achieved; 0 when the node has no FLOPs
  double intensity = 0;                          // FLOP per byte
  std::string bound;                             // "compute", "memory" or "unknown"
  std::optional<double> roofline_share;          // achieved / attainable under the roof
  double share = 0;                              // of the measured step
  double total_ms() const { return forward_ms + backward_ms; }
};

struct OtherRow {
  std::string key, what;  // "data", "load_batch: gather, normalise, labels"
  double ms = 0, share = 0;
};

struct ProfileReport {
  std::string workload, device, device_kind, precision;
  int64_t batch = 0, steps = 0, warmup = 0;
  int threads = 0;
  double step_ms = 0;               // measured, plain steps
  double instrumented_step_ms = 0;  // sum of the instrumented parts
  std::string node_timing;          // StepTimings::node_timing
  bool fused_step = false;          // StepTimings::fused_step
  Roofline roof;
  std::vector<LayerRow> layers;  // nodes with time or FLOPs, by total time, descending
  std::vector<OtherRow> other;   // data, loss, optimizer, unattributed
};

ProfileReport build_profile(const Model& m, const Plan& plan, const StepTimings& t,
                            const Roofline& roof);

std::string format_profile_text(const ProfileReport& r);
nlohmann::json profile_json(const ProfileReport& r);
ProfileReport profile_from_json(const nlohmann::json& j);
// The table as cells (header first), shared by the text and HTML renderings.
std::vector<std::vector<std::string>> profile_table(const ProfileReport& r);

}  // namespace tb
