// The dense layer on the strided GEMM shader (shaders/gemm.comp), bias and ReLU fused into the
// forward's store; the bias gradient is a column sum. x [n, in], W [out, in], y [n, out].
#include "backends/vulkan/vulkan_context.h"

namespace tb::vulkan {
namespace {

struct GemmPC {
  uint64_t a, b, c, bias;
  uint32_t m, n, k, sam, sak, sbk, sbn, scm, flags, kchunk;
};

// C[m, n] = sum_k A(m, k) B(k, n) (+ bias[n], ReLU by flags); the grid walks C's 64x64 tiles.
// Without bias or ReLU, K is split where there are few tiles (the weight gradient over a large
// batch); C must then be dense (scm == n).
void gemm(Context& cx, const char* op, GemmPC pc) {
  u32(int64_t(pc.m) * pc.k, op), u32(int64_t(pc.k) * pc.n, op), u32(int64_t(pc.m) * pc.n, op);
  const SplitK split = pc.flags || pc.scm != pc.n ? SplitK{1, pc.k} : split_k(pc.m, pc.n, pc.k);
  pc.kchunk = split.chunk;
  if (split.splits == 1)
    return dispatch(cx, "gemm", pc, groups_for(pc.n, 64), groups_for(pc.m, 64));
  const uint64_t c = pc.c;
  float* part = split_k_scratch(cx, size_t(split.splits) * pc.m * pc.n * sizeof(float));
  pc.c = addr(part);
  dispatch(cx, "gemm", pc, groups_for(pc.n, 64), groups_for(pc.m, 64), split.splits);
  sum_splits(cx, part, reinterpret_cast<float*>(uintptr_t(c)), pc.m * pc.n, split.splits);
}

void dense_forward(void* ctx, OpCache&, const DenseDims& d, const float* x, const float* w,
                   const float* b, float* y, bool relu_after) {
  if (d.n <= 0 || d.out <= 0) return;
  const uint32_t n = u32(d.n, "dense_forward"), in = u32(d.in, "dense_forward"),
                 out = u32(d.out, "dense_forward");
  // y = x W^T: A = x (m = row, k = feature), B(k, o) = W[o, k].
  gemm(context(ctx), "dense_forward",
       {addr(x), addr(w), addr(y), addr(b), n, out, in, in, 1, 1, in, out,
        (b ? 1u : 0u) | (relu_after ? 2u : 0u), 0});
}

struct ColumnSumPC {
  uint64_t dy, db;
  uint32_t rows, cols;
};

void dense_backward(void* ctx, OpCache&, const DenseDims& d, const float* x, const float* w,
                    const float* dy, float* dx, float* dw, float* db) {
  Context& cx = context(ctx);
  const uint32_t n = u32(d.n, "dense_backward"), in = u32(d.in, "dense_backward"),
                 out = u32(d.out, "dense_backward");
  // dx = dy W: A = dy [n, out], B = W [out, in].
  if (dx)
    gemm(cx, "dense_backward",
         {addr(dy), addr(w), addr(dx), 0, n, in, out, out, 1, in, 1, in, 0, 0});
  // dW = dy^T x: A(o, i) = dy[i, o], B = x [n, in].
  gemm(cx, "dense_backward", {addr(dy), addr(x), addr(dw), 0, out, in, n, 1, out, in, 1, in, 0, 0});
  if (db) dispatch(cx, "column_sum", ColumnSumPC{addr(dy), addr(db), n, out}, groups_for(out, 256));
}

}  // namespace

void register_dense(Backend& b) {
  b.dense_forward = dense_forward;
  b.dense_backward = dense_backward;
}

}  // namespace tb::vulkan
