// Convolution as implicit GEMM on the tiled GEMM core (shaders/gemm_core.glsl): the input patches
// are gathered while the tiles load, never written out (no im2col buffer), in all three
// directions. NCHW activations, KCRS weights (ops/conv2d.h).
#include "backends/vulkan/vulkan_context.h"

namespace tb::vulkan {
namespace {

struct ConvPC {
  uint64_t x, w, y;
  uint32_t n, c, h, wd, k, r, s, stride, pad, oh, ow, kchunk;
};

ConvPC conv_pc(const ConvDims& d, const void* x, const void* w, void* y, const char* op) {
  u32(d.n * d.c * d.h * d.w, op), u32(d.n * d.k * d.oh() * d.ow(), op),
      u32(d.k * d.c * d.r * d.s, op);
  return {addr(x),
          addr(w),
          addr(y),
          uint32_t(d.n),
          uint32_t(d.c),
          uint32_t(d.h),
          uint32_t(d.w),
          uint32_t(d.k),
          uint32_t(d.r),
          uint32_t(d.s),
          uint32_t(d.stride),
          uint32_t(d.pad),
          uint32_t(d.oh()),
          uint32_t(d.ow()),
          0};
}

// Grid: GEMM columns (x) by rows (y) in 64x64 tiles, and K's splits (z; kchunk is read only by
// the weight gradient's shader).
void conv_dispatch(Context& cx, const char* shader, const ConvPC& pc, int64_t rows, int64_t cols,
                   uint32_t splits = 1) {
  dispatch(cx, shader, pc, groups_for(cols, 64), groups_for(rows, 64), splits);
}

void conv2d_forward(void* ctx, OpCache&, const ConvDims& d, const float* x, const float* w,
                    float* y) {
  const ConvPC pc = conv_pc(d, x, w, y, "conv2d_forward");
  conv_dispatch(context(ctx), "conv_fwd", pc, d.k, d.n * d.oh() * d.ow());
}

void conv2d_backward_data(void* ctx, OpCache&, const ConvDims& d, const float* dy, const float* w,
                          float* dx) {
  const ConvPC pc = conv_pc(d, dy, w, dx, "conv2d_backward_data");
  conv_dispatch(context(ctx), "conv_bwd_data", pc, d.c, d.n * d.h * d.w);
}

// K = n*oh*ow grows with the batch while the output (k x c*r*s) does not: split where the
// output has few tiles (the stem's 64 x 147 at batch 128 sums 32768 values per weight).
void conv2d_backward_weights(void* ctx, OpCache&, const ConvDims& d, const float* x,
                             const float* dy, float* dw) {
  Context& cx = context(ctx);
  const int64_t m = d.k, n = d.c * d.r * d.s, k = d.n * d.oh() * d.ow();
  ConvPC pc = conv_pc(d, x, dy, dw, "conv2d_backward_weights");
  const SplitK split = split_k(m, n, k);
  pc.kchunk = split.chunk;
  if (split.splits == 1) return conv_dispatch(cx, "conv_bwd_weights", pc, m, n);
  float* part = split_k_scratch(cx, size_t(split.splits) * size_t(m * n) * sizeof(float));
  pc.y = addr(part);
  conv_dispatch(cx, "conv_bwd_weights", pc, m, n, split.splits);
  sum_splits(cx, part, dw, uint32_t(m * n), split.splits);
}

}  // namespace

void register_conv2d(Backend& b) {
  b.conv2d_forward = conv2d_forward;
  b.conv2d_backward_data = conv2d_backward_data;
  b.conv2d_backward_weights = conv2d_backward_weights;
}

}  // namespace tb::vulkan
