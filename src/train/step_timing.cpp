#include "train/step_timing.h"

#include <fmt/format.h>

#include <chrono>

#include "core/error.h"

namespace tb {

namespace {

using Clock = std::chrono::steady_clock;

struct StepRunner {
  Executor& ex;
  int64_t n = 0, batches = 1;
  int64_t counter = 0;

  void next() {
    if (counter % batches == 0) ex.start_epoch(counter / batches + 1);
    ++counter;
  }

  void plain(int64_t steps) {
    for (int64_t s = 0; s < steps; ++s) next(), ex.step(n, nullptr);
  }

  // One step timed part by part and plan step by plan step; adds milliseconds into r. A step
  // that could not be timed (a size's first op-by-op one) is followed by one that is.
  void instrumented(StepTimings& r) {
    for (StepSplit s; s.samples == 0;) {
      next();
      ex.issue_step(n, &s, &r.nodes);
      r.data_ms += s.data_ms, r.loss_ms += s.loss_ms, r.optimizer_ms += s.optimizer_ms;
    }
  }
};

}  // namespace

StepTimings time_steps(Executor& ex, int64_t steps, int warmup) {
  TB_CHECK(steps > 0, "--steps must be positive");
  StepTimings r;
  const size_t nodes = ex.model().nodes.size();
  r.nodes.forward_ms.assign(nodes, 0), r.nodes.backward_ms.assign(nodes, 0);
  r.batch = std::min<int64_t>(ex.hyper().batch, ex.train_count());
  r.steps = steps, r.warmup = warmup;
  r.node_timing = ex.backend().timers_create
                      ? "device events around each node, the pass queued behind a gate"
                      : "host clock between synchronizes around each node";

  StepRunner run{ex, r.batch, ex.train_count() / r.batch};
  run.plain(warmup);
  ex.synchronize();
  // Rounds of instrumented then plain steps, so that drift (clocks, other processes) hits both.
  const int64_t rounds = std::min<int64_t>(5, steps);
  double plain_ms = 0;
  for (int64_t k = 0; k < rounds; ++k) {
    const int64_t chunk = steps / rounds + (k < steps % rounds ? 1 : 0);
    for (int64_t s = 0; s < chunk; ++s) run.instrumented(r);
    ex.synchronize();
    const auto t0 = Clock::now();
    run.plain(chunk);
    ex.synchronize();
    plain_ms += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }
  const double k = 1.0 / double(steps);
  for (size_t i = 0; i < nodes; ++i) r.nodes.forward_ms[i] *= k, r.nodes.backward_ms[i] *= k;
  r.data_ms *= k, r.loss_ms *= k, r.optimizer_ms *= k;
  r.step_ms = plain_ms * k;
  r.fused_step = ex.fused_mlp_taken();
  r.how = ex.node_notes();
  r.precision = ex.node_precisions();
  if (ex.host_paced_passes() > 0)
    r.node_timing += fmt::format(
        " (in {} of {} passes the gate let go before the host had issued the pass: those ran at "
        "the host's pace)",
        ex.host_paced_passes(), 2 * steps);
  return r;
}

}  // namespace tb
