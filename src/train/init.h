// Parameter initialisation on the host, by each node's Init rule, from one seed.
#pragma once
#include <cstdint>

#include "models/model.h"

namespace tb {
// params: model.param_count floats; state: model.state_count floats (BN running stats).
void init_parameters(const Model& m, uint64_t seed, float* params, float* state);
}  // namespace tb
