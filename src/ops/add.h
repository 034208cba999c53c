// Elementwise add (the residual connection, and gradient accumulation where a tensor feeds two
// consumers). y may alias a or b.
#pragma once
#include <cstdint>

namespace tb::ref {
void add_forward(int64_t count, const float* a, const float* b, float* y);
}  // namespace tb::ref
