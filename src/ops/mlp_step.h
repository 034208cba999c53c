// A one-hidden-layer MLP's whole training step as one op (Backend::mlp_step), for steps so small
// that issuing their nine ops one by one is mostly launch latency (fashion-mlp: batch 32 through
// 784 -> 128 -> 10). The reference composes the ops it fuses, in the executor's order, so a
// backend's fused step is checked against exactly what the step would otherwise compute.
#pragma once
#include <cstdint>

#include "ops/batch.h"
#include "ops/optimizer.h"

namespace tb {

// One training step of a one-hidden-layer MLP (Backend::mlp_step): the data cut where the cursor
// stands, x -> h = max(x W1^T + b1, 0) -> logits = h W2^T + b2 -> softmax cross-entropy -> Adam.
// The parameters (and their gradients and Adam state) are [W1 | b1 | W2 | b2], the whole flat
// arrays; W1 is [hidden, in] and W2 [classes, hidden], as dense layers store them.
struct MlpStep {
  BatchSpec batch;  // n, normalisation and the cursor; no augmentation
  const uint8_t* images = nullptr;
  const uint8_t* labels = nullptr;
  const int32_t* indices = nullptr;
  int64_t in = 0, hidden = 0, classes = 0;
  float *params = nullptr, *grads = nullptr, *m = nullptr, *v = nullptr;
  AdamParams adam;
  float* h = nullptr;        // [n, hidden] written: the ReLU's output
  float* logits = nullptr;   // [n, classes] written
  float* dlogits = nullptr;  // [n, classes] written: the loss's gradient (mean over n)
  float* dh = nullptr;       // [n, hidden] written: the gradient at the ReLU's input
  int32_t* y = nullptr;      // [n] written: the labels
  float* metrics = nullptr;  // loss sum and correct count added, as softmax_ce
};

namespace ref {
// gather_batch (where s.batch.cursor stands), dense + ReLU, dense, softmax_ce (gradient scale
// 1/n), both dense backwards with the ReLU's between, Adam over [W1 | b1 | W2 | b2] with t =
// cursor->updates + 1. The cursor is not advanced. Host memory.
void mlp_step(const MlpStep& s);
}  // namespace ref

}  // namespace tb
