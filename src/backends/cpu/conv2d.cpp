// Convolution on oneDNN. Shapes (NCHW, weights OIHW): x [n, c, h, w], W [k, c, r, s],
// y [n, k, oh, ow]; square stride and padding, no bias (BN follows every ResNet convolution).
//   forward          y  = conv(x, W)         convolution_forward, forward_training, direct
//   backward data    dx = conv^T(dy, W)      convolution_backward_data, the forward pd as hint
//   backward weights dW = corr(x, dy)        convolution_backward_weights, same hint
// Primitives are made on first use of each direction for the node's shape (its OpCache) and
// reused every step; memory objects are made once too and only re-pointed per call.
//
// Layout: the caller's tensors are plain NCHW/OIHW. Per shape (pick_mode, with the measurements
// that chose it) the primitive is created either
//   plain    on the caller's layout: oneDNN serves it with im2col + its jit sgemm ("gemm:jit");
//   blocked  with format_tag::any: oneDNN picks its blocked layout (nChw8c, OIhw8i8o on AVX2)
//            and its direct kernel ("jit:avx2"), and the op reorders in and out around it;
//   gemm_1x1_map  a 1x1 map convolved to 1x1 is a dense layer on the centre tap: matmuls.
// Either way the caller sees NCHW in, NCHW out.
#include <vector>

#include "backends/cpu/cpu_context.h"

namespace tb::cpu {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

namespace {

// One tensor argument of a primitive: the caller's plain memory (re-pointed every call) and,
// when the primitive wants another layout, its own buffer and the reorder between the two.
struct Port {
  dnnl::memory user, inner;
  dnnl::reorder reorder;
  bool needs_reorder = false;

  void init(const Context& cx, const dnnl::memory::desc& user_md, const dnnl::memory::desc& prim_md,
            bool is_input) {
    user = dnnl::memory(user_md, cx.engine, DNNL_MEMORY_NONE);
    needs_reorder = prim_md != user_md;
    if (!needs_reorder) {
      inner = user;
      return;
    }
    inner = dnnl::memory(prim_md, cx.engine);  // oneDNN allocates, once
    reorder = is_input ? dnnl::reorder(user, inner) : dnnl::reorder(inner, user);
  }
  // Points the port at the caller's pointer; returns the memory the primitive reads or writes.
  const dnnl::memory& bind(const void* p) {
    user.set_data_handle(const_cast<void*>(p));
    return inner;
  }
  void in(dnnl::stream& s) {
    if (needs_reorder) reorder.execute(s, user, inner);
  }
  void out(dnnl::stream& s) {
    if (needs_reorder) reorder.execute(s, inner, user);
  }
};

// How a node's convolution runs; picked once per shape (see pick_mode).
enum class Mode : uint8_t { plain, blocked, gemm_1x1_map };

Mode pick_mode(const ConvDims& d) {
  // A 1x1 input map giving a 1x1 output (ResNet-50/CIFAR's layer4) touches the input with one
  // tap only, W[:, :, pad, pad]: the convolution is a dense layer. oneDNN's conv kernels still
  // sweep all r*s taps of padding (115 ms instead of ~1 ms for a 3x3 512->512 bwd-weights at
  // batch 128), so it runs as matmuls.
  if (d.h == 1 && d.w == 1 && d.oh() == 1 && d.ow() == 1 && d.pad < d.r && d.pad < d.s)
    return Mode::gemm_1x1_map;
  // Measured (AVX2, batch 128, one thread, CPU time; see the report in backend_ops_test's perf
  // mode): for 1x1 kernels the reorders to and from nChw8c cost more than the blocked kernel
  // saves (plain gemm 0.76 ms vs 1.25 ms for 64->64 on 8x8; 3.0 vs 5.1 for 64->256), while for
  // 3x3 and 7x7 kernels the blocked direct kernel wins even with the reorders (3x3 64->64 on
  // 8x8: 8.1 vs 10.3 fwd, 7.1 vs 11.1 bwd-data; 3x3 256 on 2x2: 14 vs 23 fwd, 9 vs 36 bwd-data).
  return d.r * d.s > 1 ? Mode::blocked : Mode::plain;
}

struct ConvPrims {
  ConvDims dims;
  Mode mode = Mode::plain;
  dnnl::memory::desc x_md, w_md, y_md;  // plain, the caller's
  dnnl::memory::dims strides, pad;
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_weights;
  bool have_fwd = false, have_bwd_data = false, have_bwd_weights = false;
  Port f_x, f_w, f_y;    // forward
  Port d_dy, d_w, d_dx;  // backward data
  Port w_x, w_dy, w_dw;  // backward weights
  // gemm_1x1_map: the centre tap's weights [k, c] gathered (forward, backward data) or its
  // gradient (backward weights), and the three matmuls.
  std::vector<float> tap;
  dnnl::matmul mm_fwd, mm_bwd_data, mm_bwd_weights;
  dnnl::memory::desc nc_md, nk_md, kc_md, kc_t_md, nk_t_md;
};

bool same_dims(const ConvDims& a, const ConvDims& b) {
  return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w && a.k == b.k && a.r == b.r &&
         a.s == b.s && a.stride == b.stride && a.pad == b.pad;
}

dnnl::memory::desc md_for(const ConvPrims& p, const dnnl::memory::desc& plain) {
  return p.mode == Mode::blocked ? dnnl::memory::desc(plain.dims(), dt::f32, tag::any) : plain;
}

ConvPrims* make_prims(const Context& cx, const ConvDims& d) {
  auto* p = new ConvPrims();
  p->dims = d;
  p->mode = pick_mode(d);
  const dnnl::memory::dims xd = {d.n, d.c, d.h, d.w}, wd = {d.k, d.c, d.r, d.s},
                           yd = {d.n, d.k, d.oh(), d.ow()};
  p->x_md = {xd, dt::f32, tag::nchw};
  p->w_md = {wd, dt::f32, tag::oihw};
  p->y_md = {yd, dt::f32, tag::nchw};
  if (p->mode == Mode::gemm_1x1_map) {
    // x [n, c], y [n, k], tap [k, c]; the "_t" descriptors read a row-major matrix transposed.
    p->tap.resize(size_t(d.k * d.c));
    p->nc_md = {{d.n, d.c}, dt::f32, tag::ab};
    p->nk_md = {{d.n, d.k}, dt::f32, tag::ab};
    p->kc_md = {{d.k, d.c}, dt::f32, tag::ab};
    p->kc_t_md = {{d.c, d.k}, dt::f32, tag::ba};  // tap^T
    p->nk_t_md = {{d.k, d.n}, dt::f32, tag::ba};  // dy^T
    return p;
  }
  p->strides = {d.stride, d.stride};
  p->pad = {d.pad, d.pad};  // symmetric, as PyTorch: oh() floors, the right edge may fall short
  dnnl::convolution_forward::desc desc(
      dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, md_for(*p, p->x_md),
      md_for(*p, p->w_md), md_for(*p, p->y_md), p->strides, p->pad, p->pad);
  p->fwd_pd = dnnl::convolution_forward::primitive_desc(desc, cx.engine);
  return p;
}

ConvPrims& prims(OpCache& c, const Context& cx, const ConvDims& d) {
  auto* p = c.get<ConvPrims>();
  if (!p || !same_dims(p->dims, d)) {
    if (c.destroy) c.destroy(c.impl), c.impl = nullptr, c.destroy = nullptr;
    p = c.set(make_prims(cx, d));
  }
  return *p;
}

dnnl::memory mem(const Context& cx, const dnnl::memory::desc& md, const void* ptr) {
  return dnnl::memory(md, cx.engine, const_cast<void*>(ptr));
}

// ---- gemm_1x1_map: the convolution of a 1x1 map is a dense layer on the centre tap ----------

void gather_tap(const ConvDims& d, const float* w, float* tap) {
  const int64_t rs = d.r * d.s, at = d.pad * d.s + d.pad;
#pragma omp parallel for schedule(static) if (d.k * d.c * rs >= (1 << 18))
  for (int64_t kc = 0; kc < d.k * d.c; ++kc) tap[kc] = w[kc * rs + at];
}

void gemm_forward(Context& cx, ConvPrims& p, const float* x, const float* w, float* y) {
  const ConvDims& d = p.dims;
  if (!p.have_fwd) {
    p.mm_fwd = dnnl::matmul({{p.nc_md, p.kc_t_md, p.nk_md}, cx.engine});
    p.have_fwd = true;
  }
  gather_tap(d, w, p.tap.data());
  p.mm_fwd.execute(cx.stream, {{DNNL_ARG_SRC, mem(cx, p.nc_md, x)},
                               {DNNL_ARG_WEIGHTS, mem(cx, p.kc_t_md, p.tap.data())},
                               {DNNL_ARG_DST, mem(cx, p.nk_md, y)}});
}

void gemm_backward_data(Context& cx, ConvPrims& p, const float* dy, const float* w, float* dx) {
  const ConvDims& d = p.dims;
  if (!p.have_bwd_data) {
    p.mm_bwd_data = dnnl::matmul({{p.nk_md, p.kc_md, p.nc_md}, cx.engine});
    p.have_bwd_data = true;
  }
  gather_tap(d, w, p.tap.data());
  p.mm_bwd_data.execute(cx.stream, {{DNNL_ARG_SRC, mem(cx, p.nk_md, dy)},
                                    {DNNL_ARG_WEIGHTS, mem(cx, p.kc_md, p.tap.data())},
                                    {DNNL_ARG_DST, mem(cx, p.nc_md, dx)}});
}

void gemm_backward_weights(Context& cx, ConvPrims& p, const float* x, const float* dy, float* dw) {
  const ConvDims& d = p.dims;
  if (!p.have_bwd_weights) {
    p.mm_bwd_weights = dnnl::matmul({{p.nk_t_md, p.nc_md, p.kc_md}, cx.engine});
    p.have_bwd_weights = true;
  }
  p.mm_bwd_weights.execute(cx.stream, {{DNNL_ARG_SRC, mem(cx, p.nk_t_md, dy)},
                                       {DNNL_ARG_WEIGHTS, mem(cx, p.nc_md, x)},
                                       {DNNL_ARG_DST, mem(cx, p.kc_md, p.tap.data())}});
  // Every other tap saw only padding: its gradient is zero.
  const int64_t rs = d.r * d.s, at = d.pad * d.s + d.pad;
  const float* tap = p.tap.data();
#pragma omp parallel for schedule(static) if (d.k * d.c * rs >= (1 << 18))
  for (int64_t kc = 0; kc < d.k * d.c; ++kc) {
    float* out = dw + kc * rs;
    for (int64_t t = 0; t < rs; ++t) out[t] = 0.f;
    out[at] = tap[kc];
  }
}

// ---- oneDNN convolution primitives -----------------------------------------------------------

void conv2d_forward(void* ctx, OpCache& c, const ConvDims& d, const float* x, const float* w,
                    float* y) {
  Context& cx = context(ctx);
  ConvPrims& p = prims(c, cx, d);
  if (p.mode == Mode::gemm_1x1_map) return gemm_forward(cx, p, x, w, y);
  if (!p.have_fwd) {
    p.fwd = dnnl::convolution_forward(p.fwd_pd);
    p.f_x.init(cx, p.x_md, p.fwd_pd.src_desc(), true);
    p.f_w.init(cx, p.w_md, p.fwd_pd.weights_desc(), true);
    p.f_y.init(cx, p.y_md, p.fwd_pd.dst_desc(), false);
    p.have_fwd = true;
  }
  const auto& mx = p.f_x.bind(x);
  const auto& mw = p.f_w.bind(w);
  const auto& my = p.f_y.bind(y);
  p.f_x.in(cx.stream), p.f_w.in(cx.stream);
  p.fwd.execute(cx.stream, {{DNNL_ARG_SRC, mx}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, my}});
  p.f_y.out(cx.stream);
}

void conv2d_backward_data(void* ctx, OpCache& c, const ConvDims& d, const float* dy, const float* w,
                          float* dx) {
  Context& cx = context(ctx);
  ConvPrims& p = prims(c, cx, d);
  if (p.mode == Mode::gemm_1x1_map) return gemm_backward_data(cx, p, dy, w, dx);
  if (!p.have_bwd_data) {
    dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct,
                                               md_for(p, p.x_md), md_for(p, p.w_md),
                                               md_for(p, p.y_md), p.strides, p.pad, p.pad);
    dnnl::convolution_backward_data::primitive_desc pd(desc, cx.engine, p.fwd_pd);
    p.bwd_data = dnnl::convolution_backward_data(pd);
    p.d_dy.init(cx, p.y_md, pd.diff_dst_desc(), true);
    p.d_w.init(cx, p.w_md, pd.weights_desc(), true);
    p.d_dx.init(cx, p.x_md, pd.diff_src_desc(), false);
    p.have_bwd_data = true;
  }
  const auto& mdy = p.d_dy.bind(dy);
  const auto& mw = p.d_w.bind(w);
  const auto& mdx = p.d_dx.bind(dx);
  p.d_dy.in(cx.stream), p.d_w.in(cx.stream);
  p.bwd_data.execute(cx.stream,
                     {{DNNL_ARG_DIFF_DST, mdy}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DIFF_SRC, mdx}});
  p.d_dx.out(cx.stream);
}

void conv2d_backward_weights(void* ctx, OpCache& c, const ConvDims& d, const float* x,
                             const float* dy, float* dw) {
  Context& cx = context(ctx);
  ConvPrims& p = prims(c, cx, d);
  if (p.mode == Mode::gemm_1x1_map) return gemm_backward_weights(cx, p, x, dy, dw);
  if (!p.have_bwd_weights) {
    dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct,
                                                  md_for(p, p.x_md), md_for(p, p.w_md),
                                                  md_for(p, p.y_md), p.strides, p.pad, p.pad);
    dnnl::convolution_backward_weights::primitive_desc pd(desc, cx.engine, p.fwd_pd);
    p.bwd_weights = dnnl::convolution_backward_weights(pd);
    p.w_x.init(cx, p.x_md, pd.src_desc(), true);
    p.w_dy.init(cx, p.y_md, pd.diff_dst_desc(), true);
    p.w_dw.init(cx, p.w_md, pd.diff_weights_desc(), false);
    p.have_bwd_weights = true;
  }
  const auto& mx = p.w_x.bind(x);
  const auto& mdy = p.w_dy.bind(dy);
  const auto& mdw = p.w_dw.bind(dw);
  p.w_x.in(cx.stream), p.w_dy.in(cx.stream);
  p.bwd_weights.execute(
      cx.stream, {{DNNL_ARG_SRC, mx}, {DNNL_ARG_DIFF_DST, mdy}, {DNNL_ARG_DIFF_WEIGHTS, mdw}});
  p.w_dw.out(cx.stream);
}

}  // namespace

void register_conv2d(Backend& b) {
  b.conv2d_forward = conv2d_forward;
  b.conv2d_backward_data = conv2d_backward_data;
  b.conv2d_backward_weights = conv2d_backward_weights;
}

}  // namespace tb::cpu
