// Dense layer on oneDNN matmul. Shapes (row-major): x [n, in], W [out, in], y [n, out].
//   forward          y  = x  . W^T + b  (ReLU as a post-op when fused)   W read as "ba"
//   backward data    dx = dy . W
//   backward weights dW = dy^T . x                                      dy read as "ba"
//   bias gradient    db = column sums of dy (a plain loop: out is at most a few thousand)
// The three primitives are created on first use for the node's batch size and reused.
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
};

DensePrims* make_prims(const Context& cx, const DenseDims& d, bool relu) {
  auto* p = new DensePrims();
  p->dims = d, p->relu = relu;
  const dnnl::memory::dim n = d.n, in = d.in, out = d.out;
  p->x_md = {{n, in}, dt::f32, tag::ab};
  p->w_fwd_md = {{in, out}, dt::f32, tag::ba};  // W [out, in] seen as W^T
  p->b_md = {{1, out}, dt::f32, tag::ab};
  p->y_md = {{n, out}, dt::f32, tag::ab};
  dnnl::primitive_attr attr;
  if (relu) {
    dnnl::post_ops po;
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
  }
  p->fwd = dnnl::matmul({{p->x_md, p->w_fwd_md, p->b_md, p->y_md}, attr, cx.engine});

  p->dy_md = {{n, out}, dt::f32, tag::ab};
  p->w_md = {{out, in}, dt::f32, tag::ab};
  p->dx_md = {{n, in}, dt::f32, tag::ab};
  p->bwd_data = dnnl::matmul({{p->dy_md, p->w_md, p->dx_md}, cx.engine});

  p->dyt_md = {{out, n}, dt::f32, tag::ba};  // dy [n, out] seen as dy^T
  p->dw_md = {{out, in}, dt::f32, tag::ab};
  p->bwd_weights = dnnl::matmul({{p->dyt_md, p->x_md, p->dw_md}, cx.engine});
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

dnnl::memory mem(const Context& cx, const dnnl::memory::desc& md, const void* ptr) {
  return dnnl::memory(md, cx.engine, const_cast<void*>(ptr));
}

void dense_forward(void* ctx, OpCache& c, const DenseDims& d, const float* x, const float* w,
                   const float* b, float* y, bool relu_after) {
  Context& cx = context(ctx);
  DensePrims& p = prims(c, cx, d, relu_after);
  std::unordered_map<int, dnnl::memory> args = {{DNNL_ARG_SRC, mem(cx, p.x_md, x)},
                                                {DNNL_ARG_WEIGHTS, mem(cx, p.w_fwd_md, w)},
                                                {DNNL_ARG_DST, mem(cx, p.y_md, y)}};
  if (b) {
    args[DNNL_ARG_BIAS] = mem(cx, p.b_md, b);
    p.fwd.execute(cx.stream, args);
  } else {
    // No bias: a zero bias keeps one primitive per node; dense layers without bias are rare here.
    std::vector<float> zeros(size_t(d.out), 0.f);
    args[DNNL_ARG_BIAS] = mem(cx, p.b_md, zeros.data());
    p.fwd.execute(cx.stream, args);
  }
}

void dense_backward(void* ctx, OpCache& c, const DenseDims& d, const float* x, const float* w,
                    const float* dy, float* dx, float* dw, float* db) {
  Context& cx = context(ctx);
  DensePrims& p = prims(c, cx, d, c.get<DensePrims>() ? c.get<DensePrims>()->relu : false);
  if (dx)
    p.bwd_data.execute(cx.stream, {{DNNL_ARG_SRC, mem(cx, p.dy_md, dy)},
                                   {DNNL_ARG_WEIGHTS, mem(cx, p.w_md, w)},
                                   {DNNL_ARG_DST, mem(cx, p.dx_md, dx)}});
  p.bwd_weights.execute(cx.stream, {{DNNL_ARG_SRC, mem(cx, p.dyt_md, dy)},
                                    {DNNL_ARG_WEIGHTS, mem(cx, p.x_md, x)},
                                    {DNNL_ARG_DST, mem(cx, p.dw_md, dw)}});
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
