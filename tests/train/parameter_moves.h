// How far a run moves the parameters: for comparing two ways of running the same training.
#pragma once
#include <vector>

#include "train/executor.h"
#include "train/runner.h"

namespace tb::testing {

// Trains t to its end and returns each parameter's move.
inline std::vector<float> parameter_moves(Executor& t) {
  const std::vector<float> before = t.download_params();
  train(t, nullptr);
  std::vector<float> moved = t.download_params();
  for (size_t i = 0; i < before.size(); ++i) moved[i] -= before[i];
  return moved;
}

}  // namespace tb::testing
