// Timing a training step node by node, for `trainbench profile`. Two kinds of steps, interleaved
// in rounds so drift hits both alike:
//   - instrumented: each plan step's forward and backward milliseconds (the executor's timers:
//     device events behind a gate where the backend has them, else the host clock between
//     synchronizes), data, loss and optimizer between synchronizes;
//   - plain: Executor::step exactly as training runs it, which gives the real step time.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "train/executor.h"

namespace tb {

// Mean milliseconds per step.
struct StepTimings {
  NodeTimes nodes;                                    // per node, instrumented steps
  std::vector<std::string> how;                       // per node, the backend's OpCache::note
  std::vector<std::optional<Precision>> precision;    // per node, OpCache::precision
  double data_ms = 0, loss_ms = 0, optimizer_ms = 0;  // instrumented steps
  double step_ms = 0;                                 // plain steps
  int64_t batch = 0, steps = 0, warmup = 0;
  std::string node_timing;  // how the nodes were timed (device events, or the host clock)
  // The plain steps ran as the backend's fused MLP step; the instrumented ones issue its ops.
  bool fused_step = false;
};

// Runs `warmup` plain steps, then `steps` instrumented and `steps` plain steps in rounds. Every
// `train_count / batch` steps the cursor goes back to the start of the (unshuffled) training set,
// as a new epoch with new augmentation seeds.
StepTimings time_steps(Executor& ex, int64_t steps, int warmup = 2);

}  // namespace tb
