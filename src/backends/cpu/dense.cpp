// Dense layer on oneDNN matmul. Shapes (row-major): x [n, in], W [out, in], y [n, out].
//   forward          y  = x  . W^T + b  (ReLU as a post-op when fused)   W read as "ba"
//   backward data    dx = dy . W
//   backward weights dW = dy^T . x                                      dy read as "ba"
//   bias gradient    db = column sums of dy (a plain loop: out is at most a few thousand)
// The three primitives are created on first use for the node's batch size and reused. Under bf16
// the matmuls read bf16 copies of x, W and dy (one copy of dy serves both backward products) and
// write fp32.
#include <omp.h>

#include "backends/cpu/cpu_context.h"

namespace tb::cpu {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

namespace {

struct DensePrims {
  DenseDims dims;
  bool relu = false;
  dnnl::memory::desc x_md, w_fwd_md, b_md, y_md, dy_md, w_md, dx_md, dyt_md, dw_md;
  dnnl::matmul fwd, bwd_data, bwd_weights;
  // Memory objects made once; each call only points them at this step's buffers (creating
  // dnnl::memory allocates, and at batch 32 a step is only ~100 us of arithmetic).
  dnnl::memory x, w_fwd, b, y, dy, w, dx, dyt, dw;
  std::vector<float> zero_bias;
};

DensePrims* make_prims(const Context& cx, const DenseDims& d, bool relu) {
  auto* p = new DensePrims();
  p->dims = d, p->relu = relu;
  const dnnl::memory::dim n = d.n, in = d.in, out = d.out;
  const dt op = cx.operand_type();  // what the matmuls read: x, W, dy
  p->x_md = {{n, in}, op, tag::ab};
  p->w_fwd_md = {{in, out}, op, tag::ba};  // W [out, in] seen as W^T
  p->b_md = {{1, out}, dt::f32, tag::ab};
  p->y_md = {{n, out}, dt::f32, tag::ab};
  dnnl::primitive_attr attr;
  if (relu) {
    dnnl::post_ops po;
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
  }
  p->fwd = dnnl::matmul({{p->x_md, p->w_fwd_md, p->b_md, p->y_md}, attr, cx.engine});

  p->dy_md = {{n, out}, op, tag::ab};
  p->w_md = {{out, in}, op, tag::ab};
  p->dx_md = {{n, in}, dt::f32, tag::ab};
  p->bwd_data = dnnl::matmul({{p->dy_md, p->w_md, p->dx_md}, cx.engine});

  p->dyt_md = {{out, n}, op, tag::ba};  // dy [n, out] seen as dy^T
  p->dw_md = {{out, in}, dt::f32, tag::ab};
  p->bwd_weights = dnnl::matmul({{p->dyt_md, p->x_md, p->dw_md}, cx.engine});

  auto handle = [&cx](const dnnl::memory::desc& md) {
    return dnnl::memory(md, cx.engine, DNNL_MEMORY_NONE);
  };
  p->x = handle(p->x_md), p->w_fwd = handle(p->w_fwd_md), p->b = handle(p->b_md);
  p->y = handle(p->y_md), p->dy = handle(p->dy_md), p->w = handle(p->w_md);
  p->dx = handle(p->dx_md), p->dyt = handle(p->dyt_md), p->dw = handle(p->dw_md);
  p->zero_bias.assign(size_t(out), 0.f);
  return p;
}

DensePrims& prims(OpCache& c, const Context& cx, const DenseDims& d, bool relu) {
  auto* p = c.get<DensePrims>();
  if (!p || p->dims.n != d.n || p->dims.in != d.in || p->dims.out != d.out || p->relu != relu) {
    if (c.destroy) c.destroy(c.impl);
    p = c.set(make_prims(cx, d, relu));
  }
  return *p;
}

dnnl::memory& at(dnnl::memory& m, const void* p) {
  m.set_data_handle(const_cast<void*>(p));
  return m;
}

void dense_forward(void* ctx, OpCache& c, const DenseDims& d, const float* x, const float* w,
                   const float* b, float* y, bool relu_after) {
  Context& cx = context(ctx);
  DensePrims& p = prims(c, cx, d, relu_after);
  // No bias: a zero bias keeps one primitive per node (no dense layer here lacks a bias).
  p.fwd.execute(cx.stream, {{DNNL_ARG_SRC, at(p.x, cx.operand(0, x, size_t(d.n * d.in)))},
                            {DNNL_ARG_WEIGHTS, at(p.w_fwd, cx.operand(1, w, size_t(d.out * d.in)))},
                            {DNNL_ARG_BIAS, at(p.b, b ? b : p.zero_bias.data())},
                            {DNNL_ARG_DST, at(p.y, y)}});
}

void dense_backward(void* ctx, OpCache& c, const DenseDims& d, const float* x, const float* w,
                    const float* dy, float* dx, float* dw, float* db) {
  Context& cx = context(ctx);
  DensePrims& p = prims(c, cx, d, c.get<DensePrims>() ? c.get<DensePrims>()->relu : false);
  const void* dy_op = cx.operand(0, dy, size_t(d.n * d.out));  // read by both products
  if (dx)
    p.bwd_data.execute(cx.stream,
                       {{DNNL_ARG_SRC, at(p.dy, dy_op)},
                        {DNNL_ARG_WEIGHTS, at(p.w, cx.operand(1, w, size_t(d.out * d.in)))},
                        {DNNL_ARG_DST, at(p.dx, dx)}});
  p.bwd_weights.execute(cx.stream,
                        {{DNNL_ARG_SRC, at(p.dyt, dy_op)},
                         {DNNL_ARG_WEIGHTS, at(p.x, cx.operand(1, x, size_t(d.n * d.in)))},
                         {DNNL_ARG_DST, at(p.dw, dw)}});
  if (db) {
    const int64_t n = d.n, out = d.out;
    for (int64_t o = 0; o < out; ++o) db[o] = 0.f;
    for (int64_t i = 0; i < n; ++i) {
      const float* row = dy + i * out;
#pragma omp simd
      for (int64_t o = 0; o < out; ++o) db[o] += row[o];
    }
  }
}

}  // namespace

void register_dense(Backend& b) {
  b.dense_forward = dense_forward;
  b.dense_backward = dense_backward;
}

}  // namespace tb::cpu
