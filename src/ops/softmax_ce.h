// Softmax cross-entropy over logits [n, classes] with integer labels, forward and backward in one
// pass. Loss = mean over the batch is what training minimises, so the gradient is
// (softmax - onehot) * grad_scale with grad_scale = 1 / n_batch.
// metrics (2 floats) accumulate: metrics[0] += sum of per-sample losses, metrics[1] += number of
// correct argmax predictions. Accumulating on the device lets a step run without a host sync.
#pragma once
#include <cstdint>

namespace tb::ref {
// dlogits may be null (evaluation).
void softmax_ce(int64_t n, int64_t classes, const float* logits, const int32_t* labels,
                float grad_scale, float* dlogits, float* metrics);
}  // namespace tb::ref
