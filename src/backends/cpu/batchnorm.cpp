// oneDNN fast path for batchnorm: being written; until then the reference entry stays in the table.
#include "backends/cpu/cpu_context.h"

namespace tb::cpu {
void register_batchnorm(Backend&) {}
}  // namespace tb::cpu
