#include "train/arena.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/memory.h"
#include "ops/batch.h"

namespace tb {

ArenaLayout layout_arena(const Model& m, const Plan& p, const ArenaShape& shape) {
  ArenaLayout L;
  auto take = [&L](size_t bytes) {
    const size_t at = L.total;
    L.total += align_up(bytes);
    return at;
  };
  auto train_only = [&](size_t bytes) { return shape.trains ? take(bytes) : kNoBuffer; };
  const size_t f = sizeof(float), nodes = m.nodes.size();
  const int64_t P = m.param_count, batch = shape.batch;
  L.params = take(P * f), L.grads = train_only(P * f), L.m = train_only(P * f);
  L.v = train_only(P * f);
  L.state = take(std::max<int64_t>(m.state_count, 1) * f);
  L.out.resize(nodes), L.grad.resize(nodes), L.saved.resize(nodes), L.argmax.resize(nodes);
  int64_t largest = 0;
  for (size_t i = 0; i < nodes; ++i) {
    const Node& n = m.nodes[i];
    const int64_t count = batch * n.out_size();
    largest = std::max(largest, count);
    L.out[i] = p.has_out[i] ? take(count * (p.out_bf16[i] ? sizeof(uint16_t) : f)) : kNoBuffer;
    L.grad[i] = p.grad_buffer[i] == int(i) ? train_only(count * f) : kNoBuffer;
    L.saved[i] = n.kind == OpKind::batchnorm ? take(2 * n.c * f) : kNoBuffer;
    L.argmax[i] = n.kind == OpKind::maxpool ? take(count * sizeof(int32_t)) : kNoBuffer;
  }
  for (size_t i = 0; i < nodes; ++i)  // a node sharing an add's gradient points at the add's
    if (p.grad_buffer[i] >= 0) L.grad[i] = L.grad[size_t(p.grad_buffer[i])];
  L.scratch = train_only(largest * f), L.labels = take(batch * sizeof(int32_t));
  L.metrics = take(4 * f), L.cursor = take(sizeof(StepCursor));
  L.eval_cursor = take(sizeof(StepCursor));
  L.train_idx = train_only(shape.train_count * sizeof(int32_t));
  L.test_idx = take(shape.test_count * sizeof(int32_t));
  return L;
}

OutOfMemory restate_out_of_memory(const OutOfMemory& e, const std::string& device, const Model& m,
                                  const Plan& p, const ArenaShape& shape, size_t taken,
                                  size_t data_bytes) {
  const double mib = 1.0 / 1048576.0;
  auto arena_bytes = [&](int64_t batch) {
    ArenaShape s = shape;
    s.batch = batch;
    return layout_arena(m, p, s).total;
  };
  const size_t needed = arena_bytes(shape.batch);
  if (e.available == 0)  // the backend cannot say how much is free
    return OutOfMemory(fmt::format("{}; batch {} needs {:.1f} MiB for the run and {:.1f} MiB for "
                                   "the data set",
                                   e.what(), shape.batch, needed * mib, data_bytes * mib),
                       e.requested, e.available);
  // What was free when the run asked: what the backend reports now plus what the run had taken.
  const size_t free_bytes = e.available + taken;
  auto fits = [&](int64_t b) { return arena_bytes(b) + data_bytes <= free_bytes; };
  int64_t lo = 0, hi = shape.batch;  // fits(lo) (or lo == 0), !fits(hi)
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  const std::string advice =
      lo > 0 ? fmt::format(
                   "the largest batch that fits is {} (--batch {}; the backend's own workspaces "
                   "come on top)",
                   lo, lo)
             : std::string("not even batch 1 fits: the data set or the model is too large for it");
  return OutOfMemory(
      fmt::format("out of memory on {}: batch {} needs {:.1f} MiB for the run and {:.1f} MiB for "
                  "the data set, {:.1f} MiB are free; {}",
                  device, shape.batch, needed * mib, data_bytes * mib, free_bytes * mib, advice),
      e.requested, e.available);
}

}  // namespace tb
