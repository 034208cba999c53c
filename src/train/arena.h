// The arena: every buffer of a run in one device allocation, laid out once from the plan (llm.c's
// malloc_and_point_parameters), so a step allocates nothing. And what to say when it does not fit.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "models/model.h"
#include "train/plan.h"

namespace tb {

// The offset of a buffer that a run does not get (its pointer is null).
constexpr size_t kNoBuffer = ~size_t(0);

struct ArenaLayout {
  size_t total = 0;
  size_t params = 0, grads = 0, m = 0, v = 0, state = 0, scratch = 0, labels = 0, metrics = 0,
         cursor = 0, eval_cursor = 0, train_idx = 0, test_idx = 0;
  std::vector<size_t> out, grad, saved, argmax;  // per node
};

// A run that trains gets gradients, optimizer state, scratch and training indices; a test-only
// one does not (kNoBuffer).
struct ArenaShape {
  int64_t batch = 0;
  bool trains = true;
  int64_t train_count = 0, test_count = 0;
};

ArenaLayout layout_arena(const Model& m, const Plan& p, const ArenaShape& shape);

// The backend's out-of-memory error restated for the run: what the batch needs, what was free
// (what the backend reports plus what the run had `taken`), and the largest batch that fits.
OutOfMemory restate_out_of_memory(const OutOfMemory& e, const std::string& device, const Model& m,
                                  const Plan& p, const ArenaShape& shape, size_t taken,
                                  size_t data_bytes);

}  // namespace tb
