// `trainbench profile`: where a training step's time goes, node by node, against the device's
// roofline.
//
// Two kinds of steps are timed, interleaved in rounds so drift hits both alike:
//   - instrumented: each node's forward and backward milliseconds, from device events around
//     every node where the backend has timers (CUDA: the pass queued behind a gate, so the events
//     time the device, not the host's launches), else the host clock between synchronizes around
//     every node; data, loss and optimizer between synchronizes;
//   - plain: Trainer::step exactly as training runs it, which gives the real step time.
// The table's rows are the nodes, then data, loss, optimizer and "unattributed" (the measured
// step minus everything above: timer and synchronize overhead, noise; it can be negative), so the
// rows add up to the measured step.
//
// FLOPs follow WORKLOADS.md: 2 x multiply-adds for dense and conv, backward = 2 x forward, 1 x for
// the layer that reads the input; other ops count 0. Bytes are an estimate of the fp32 traffic:
// inputs, outputs and weights read or written, forward and backward.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "models/model.h"
#include "train/trainer.h"

namespace tb {

struct Roofline {
  std::optional<double> peak_flops;  // FLOP/s for the precision used
  // FLOP/s of the precisions some nodes ran in instead (StepTimings::precision).
  std::map<Precision, double> other_peaks;
  std::optional<double> bandwidth;  // bytes/s of device memory
  std::string peak_source, bandwidth_source;
  std::optional<double> ridge() const;  // FLOP/byte where the roof turns flat
};

// Mean milliseconds per step.
struct StepTimings {
  std::vector<double> forward_ms, backward_ms;        // per node, instrumented steps
  std::vector<ReluFusion> relu_fusion;                // Trainer::relu_fusion
  std::vector<int> bn_of_add, add_of_bn;              // Trainer::bn_of_add, add_of_bn
  std::vector<std::string> how;                       // per node, the backend's OpCache::note
  std::vector<std::optional<Precision>> precision;    // per node, OpCache::precision
  double data_ms = 0, loss_ms = 0, optimizer_ms = 0;  // instrumented steps
  double step_ms = 0;                                 // plain steps
  int64_t batch = 0, steps = 0, warmup = 0;
  std::string node_timing;  // how the nodes were timed (device events, or the host clock)
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
  Roofline roof;
  std::vector<LayerRow> layers;  // nodes with time or FLOPs, by total time, descending
  std::vector<OtherRow> other;   // data, loss, optimizer, unattributed
};

// Forward and backward FLOPs and estimated bytes of node i for a batch of n.
double node_flops_forward(const Model& m, size_t i, int64_t n);
double node_flops_backward(const Model& m, size_t i, int64_t n);
double node_bytes(const Model& m, size_t i, int64_t n, bool forward_fused_away);

// Runs `warmup` plain steps, then `steps` instrumented and `steps` plain steps in rounds.
StepTimings time_steps(Trainer& t, int64_t steps, int warmup = 2);
ProfileReport build_profile(const Model& m, const StepTimings& t, const Roofline& roof);

// Roofline pieces. GPU bandwidth from a small datasheet table (nullopt when unknown); CPU
// bandwidth measured with a parallel memcpy of two 64 MiB buffers (read + write counted).
std::optional<double> gpu_memory_bandwidth(std::string_view device_name, std::string* source);
double measure_memory_bandwidth(int threads, double seconds_budget, std::string* source);

std::string format_profile_text(const ProfileReport& r);
nlohmann::json profile_json(const ProfileReport& r);
ProfileReport profile_from_json(const nlohmann::json& j);
// The table as cells (header first), shared by the text and HTML renderings.
std::vector<std::vector<std::string>> profile_table(const ProfileReport& r);

}  // namespace tb
