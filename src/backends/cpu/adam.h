// Adam's update over a span of the flat parameter arrays: the optimizer pass (optimizer.cpp) splits
// the whole array over the threads; the fused MLP step (mlp_step.cpp) has each thread update the
// rows whose gradients it has just made.
#pragma once
#include <cstdint>

#include "ops/optimizer.h"

namespace tb::cpu {

// What one step's update needs besides the arrays: the bias corrections, computed once a step.
struct AdamConstants {
  float b1 = 0, b2 = 0, wd = 0, eps = 0, step_size = 0, inv_sqrt_bc2 = 0;
};
AdamConstants adam_constants(const AdamParams& hp, int64_t step);  // step: Adam's t, from 1

// p, g, m, v [begin, end) updated; p16, when set, the bf16 copy of p to write as well.
void adam_span(const AdamConstants& k, int64_t begin, int64_t end, float* p, const float* g,
               float* m, float* v, uint16_t* p16);

}  // namespace tb::cpu
