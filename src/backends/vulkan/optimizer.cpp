// Optimizers over the flat parameter array, one dispatch per step; Adam's step count read from
// the cursor on the device (so a recorded step replays with the right one), and the cursor's
// advance, the step's last op.
#include <algorithm>

#include "backends/vulkan/vulkan_context.h"

namespace tb::vulkan {
namespace {

struct AdamPC {
  uint64_t p, g, m, v, at;
  uint32_t count;
  float lr, b1, b2, eps, wd;
};
struct SgdPC {
  uint64_t p, g, buf;
  uint32_t count;
  float lr, momentum, wd;
  uint32_t nesterov;
};
struct AdvancePC {
  uint64_t cursor;
};

}  // namespace

void register_optimizers(Backend& b) {
  b.adam_update = [](void* ctx, int64_t count, float* p, const float* g, float* m, float* v,
                     const AdamParams& hp, const StepCursor* at) {
    if (count <= 0) return;
    const AdamPC pc{addr(p), addr(g),  addr(m),  addr(v), addr(at),       u32(count, "adam_update"),
                    hp.lr,   hp.beta1, hp.beta2, hp.eps,  hp.weight_decay};
    // Each workgroup computes the bias corrections once; a few hundred of them walk the array.
    dispatch(context(ctx), "adam", pc, std::min<uint32_t>(groups_for(count, 256), 256));
  };
  b.sgd_update = [](void* ctx, int64_t count, float* p, const float* g, float* buf,
                    const SgdParams& hp) {
    if (count <= 0) return;
    const SgdPC pc{addr(p), addr(g),     addr(buf),       u32(count, "sgd_update"),
                   hp.lr,   hp.momentum, hp.weight_decay, hp.nesterov ? 1u : 0u};
    dispatch(context(ctx), "sgd", pc, groups_for(count, 256));
  };
  b.advance_cursor = [](void* ctx, StepCursor* c) {
    dispatch(context(ctx), "advance", AdvancePC{addr(c)}, 1);
  };
}

}  // namespace tb::vulkan
