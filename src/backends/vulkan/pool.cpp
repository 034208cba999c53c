// Max pooling (forward keeps each output's argmax; the backward gathers, no atomics) and global
// average pooling (ops/pool.h).
#include "backends/vulkan/vulkan_context.h"

namespace tb::vulkan {
namespace {

struct MaxpoolPC {
  uint64_t a, b, c;  // forward: x, y, argmax; backward: dy, argmax, dx
  uint32_t nc, h, w, oh, ow, kernel, stride, pad;
};

MaxpoolPC maxpool_pc(const PoolDims& d, const void* a, const void* b, const void* c,
                     const char* op) {
  u32(d.n * d.c * d.h * d.w, op), u32(d.n * d.c * d.oh() * d.ow(), op);
  return {
      addr(a),        addr(b),          addr(c),          uint32_t(d.n * d.c), uint32_t(d.h),
      uint32_t(d.w),  uint32_t(d.oh()), uint32_t(d.ow()), uint32_t(d.kernel),  uint32_t(d.stride),
      uint32_t(d.pad)};
}

struct AvgpoolPC {
  uint64_t src, dst;
  uint32_t rows, hw, backward;
};

}  // namespace

void register_pool(Backend& b) {
  b.maxpool_forward = [](void* ctx, OpCache&, const PoolDims& d, const float* x, float* y,
                         int32_t* argmax) {
    dispatch(context(ctx), "maxpool_fwd", maxpool_pc(d, x, y, argmax, "maxpool_forward"),
             groups_for(d.n * d.c * d.oh() * d.ow(), 256));
  };
  b.maxpool_backward = [](void* ctx, OpCache&, const PoolDims& d, const float* dy,
                          const int32_t* argmax, float* dx) {
    dispatch(context(ctx), "maxpool_bwd", maxpool_pc(d, dy, argmax, dx, "maxpool_backward"),
             groups_for(d.n * d.c * d.h * d.w, 256));
  };
  b.global_avgpool_forward = [](void* ctx, int64_t n, int64_t c, int64_t hw, Layout, const float* x,
                                float* y) {
    const uint32_t rows = u32(n * c, "global_avgpool_forward");
    u32(n * c * hw, "global_avgpool_forward");
    dispatch(context(ctx), "avgpool", AvgpoolPC{addr(x), addr(y), rows, uint32_t(hw), 0},
             groups_for(rows, 256));
  };
  b.global_avgpool_backward = [](void* ctx, int64_t n, int64_t c, int64_t hw, Layout,
                                 const float* dy, float* dx) {
    const uint32_t rows = u32(n * c, "global_avgpool_backward");
    const uint32_t total = u32(n * c * hw, "global_avgpool_backward");
    dispatch(context(ctx), "avgpool", AvgpoolPC{addr(dy), addr(dx), rows, uint32_t(hw), 1},
             groups_for(total, 256));
  };
}

}  // namespace tb::vulkan
