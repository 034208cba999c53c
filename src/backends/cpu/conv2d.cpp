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
//   unfold / im2col  small maps (layer3, layer4) as matrix products; see pick_mode.
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
enum class Mode : uint8_t { plain, blocked, unfold, im2col };

// Largest output map (oh*ow) whose convolution runs as one im2col matmul over all images.
constexpr int64_t kIm2colMaxMap = 4;

Mode pick_mode(const ConvDims& d) {
  const int64_t map_in = d.h * d.w, map_out = d.oh() * d.ow(), taps = d.r * d.s;
  // Small maps (ResNet-50/CIFAR's layer3 at 2x2 and layer4 at 1x1): oneDNN's kernels are built
  // for large maps; at 2x2 or 1x1 they ran at 7-30% of peak, their backward passes 3-6x slower
  // than the forward (`trainbench profile`: 116 ms for the backward of the 1x1 1024->2048
  // stride-2 projection on 2x2, 69 ms for the 3x3 512->512 on 2x2 -> 1x1). There a convolution
  // is a plain matrix product over a few positions, so it runs as oneDNN matmuls:
  //   unfold  kernel > 1x1 and an input map no larger than the kernel: a dense layer from
  //           x [n, c*h*w] to y [n, k*oh*ow] through an unfolded weight matrix holding each
  //           (output, input) position pair's tap. No padding taps are multiplied, and both
  //           activations are used in place (NCHW is already that matrix).
  //   im2col  any other kernel on an output map of at most kIm2colMaxMap positions: the
  //           patches of all images as rows [n*oh*ow, c*r*s] (for 1x1 a transpose), one
  //           matmul with W [k, c*r*s], and y transposed back. oneDNN's own gemm convolution
  //           does this one image at a time, a matmul with 4 or 1 columns.
  // After the change the same step took 714 ms instead of 1137. Raising kIm2colMaxMap to 16
  // (ResNet's 4x4 layer2) measured slower: 762-782 ms a step against 686-749.
  if (taps > 1 && map_in <= taps) return Mode::unfold;
  if (map_out <= kIm2colMaxMap) return Mode::im2col;
  // Measured (AVX2, batch 128, one thread, CPU time; see the report in backend_ops_test's perf
  // mode): for 1x1 kernels the reorders to and from nChw8c cost more than the blocked kernel
  // saves (plain gemm 0.76 ms vs 1.25 ms for 64->64 on 8x8; 3.0 vs 5.1 for 64->256), while for
  // 3x3 and 7x7 kernels the blocked direct kernel wins even with the reorders (3x3 64->64 on
  // 8x8: 8.1 vs 10.3 fwd, 7.1 vs 11.1 bwd-data; 3x3 256 on 2x2: 14 vs 23 fwd, 9 vs 36 bwd-data).
  return taps > 1 ? Mode::blocked : Mode::plain;
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
  Port f_x, f_w, f_y;    // forward
  Port d_dy, d_w, d_dx;  // backward data
  Port w_x, w_dy, w_dw;  // backward weights
  // unfold and im2col: three matmuls over row-major matrices x_mat [rows, x_cols], y_mat
  // [rows, y_cols] and w_mat [y_cols, x_cols]; "_t" descriptors read one transposed. unfold:
  // x [n, c*h*w], y [n, k*oh*ow], unfolded weights. im2col: patches [n*oh*ow, c*r*s], y rows
  // [n*oh*ow, k], W [k, c*r*s] as it is.
  dnnl::matmul mm_fwd, mm_bwd_data, mm_bwd_weights;
  dnnl::memory::desc x_mat, y_mat, w_mat, w_mat_t, y_mat_t;
  std::vector<int32_t> tap_of;  // unfold: [map_out * map_in] -> tap index r*s, or -1
  size_t scratch_floats = 0;    // unfold: the weights; im2col: patches, then y rows
};

bool same_dims(const ConvDims& a, const ConvDims& b) {
  return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w && a.k == b.k && a.r == b.r &&
         a.s == b.s && a.stride == b.stride && a.pad == b.pad;
}

dnnl::memory::desc md_for(const ConvPrims& p, const dnnl::memory::desc& plain) {
  return p.mode == Mode::blocked ? dnnl::memory::desc(plain.dims(), dt::f32, tag::any) : plain;
}

void init_matmuls(ConvPrims* p) {
  const ConvDims& d = p->dims;
  const int64_t map_in = d.h * d.w, map_out = d.oh() * d.ow();
  int64_t rows, x_cols, y_cols;  // rows of x and y; columns of x and y
  if (p->mode == Mode::unfold) {
    rows = d.n, x_cols = d.c * map_in, y_cols = d.k * map_out;
    p->tap_of.assign(size_t(map_out * map_in), -1);
    for (int64_t oy = 0; oy < d.oh(); ++oy)
      for (int64_t ox = 0; ox < d.ow(); ++ox)
        for (int64_t iy = 0; iy < d.h; ++iy)
          for (int64_t ix = 0; ix < d.w; ++ix) {
            const int64_t ty = iy - oy * d.stride + d.pad, tx = ix - ox * d.stride + d.pad;
            if (ty >= 0 && ty < d.r && tx >= 0 && tx < d.s)
              p->tap_of[size_t((oy * d.ow() + ox) * map_in + iy * d.w + ix)] =
                  int32_t(ty * d.s + tx);
          }
    p->scratch_floats = size_t(y_cols * x_cols);
  } else {
    rows = d.n * map_out, x_cols = d.c * d.r * d.s, y_cols = d.k;
    p->scratch_floats = size_t(rows * (x_cols + y_cols));
  }
  p->x_mat = {{rows, x_cols}, dt::f32, tag::ab};
  p->y_mat = {{rows, y_cols}, dt::f32, tag::ab};
  p->w_mat = {{y_cols, x_cols}, dt::f32, tag::ab};
  p->w_mat_t = {{x_cols, y_cols}, dt::f32, tag::ba};
  p->y_mat_t = {{y_cols, rows}, dt::f32, tag::ba};
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
  if (p->mode == Mode::unfold || p->mode == Mode::im2col) {
    init_matmuls(p);
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

// ---- unfold: a convolution on a map no larger than its kernel is a dense layer --------------

// wu[(k, o), (c, i)] = W[k, c, tap(o, i)], zero where output position o does not see input i.
void unfold_weights(const ConvPrims& p, const float* w, float* wu) {
  const ConvDims& d = p.dims;
  const int64_t map_in = d.h * d.w, map_out = d.oh() * d.ow(), rs = d.r * d.s;
  const int32_t* tap_of = p.tap_of.data();
#pragma omp parallel for schedule(static) if (d.k * d.c * map_in * map_out >= (1 << 16))
  for (int64_t k = 0; k < d.k; ++k)
    for (int64_t o = 0; o < map_out; ++o) {
      float* row = wu + (k * map_out + o) * d.c * map_in;
      const int32_t* taps = tap_of + o * map_in;
      for (int64_t c = 0; c < d.c; ++c) {
        const float* wkc = w + (k * d.c + c) * rs;
        for (int64_t i = 0; i < map_in; ++i) row[c * map_in + i] = taps[i] < 0 ? 0.f : wkc[taps[i]];
      }
    }
}

// The reverse: dW[k, c, t] = sum of dwu[(k, o), (c, i)] over the pairs that use tap t.
void fold_weight_grad(const ConvPrims& p, const float* dwu, float* dw) {
  const ConvDims& d = p.dims;
  const int64_t map_in = d.h * d.w, map_out = d.oh() * d.ow(), rs = d.r * d.s;
  const int32_t* tap_of = p.tap_of.data();
#pragma omp parallel for schedule(static) if (d.k * d.c * map_in * map_out >= (1 << 16))
  for (int64_t k = 0; k < d.k; ++k) {
    float* dwk = dw + k * d.c * rs;
    for (int64_t t = 0; t < d.c * rs; ++t) dwk[t] = 0.f;
    for (int64_t o = 0; o < map_out; ++o) {
      const float* row = dwu + (k * map_out + o) * d.c * map_in;
      const int32_t* taps = tap_of + o * map_in;
      for (int64_t c = 0; c < d.c; ++c)
        for (int64_t i = 0; i < map_in; ++i)
          if (taps[i] >= 0) dwk[c * rs + taps[i]] += row[c * map_in + i];
    }
  }
}

// ---- im2col: all images' patches as the rows of one matrix ----------------------------------

// xcol[(n, oy, ox), (c, ty, tx)] = x[n, c, oy*stride - pad + ty, ox*stride - pad + tx], zero
// in the padding. For a 1x1 kernel this is a transpose that takes every stride-th position.
void im2col(const ConvDims& d, const float* x, float* xcol) {
  const int64_t oh = d.oh(), ow = d.ow(), map_out = oh * ow, cols = d.c * d.r * d.s;
#pragma omp parallel for schedule(static) if (d.n * map_out * cols >= (1 << 16))
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t c = 0; c < d.c; ++c) {
      const float* xc = x + (n * d.c + c) * d.h * d.w;
      for (int64_t ty = 0; ty < d.r; ++ty)
        for (int64_t tx = 0; tx < d.s; ++tx) {
          float* out = xcol + n * map_out * cols + (c * d.r + ty) * d.s + tx;
          for (int64_t oy = 0; oy < oh; ++oy) {
            const int64_t iy = oy * d.stride - d.pad + ty;
            for (int64_t ox = 0; ox < ow; ++ox) {
              const int64_t ix = ox * d.stride - d.pad + tx;
              const bool inside = iy >= 0 && iy < d.h && ix >= 0 && ix < d.w;
              out[(oy * ow + ox) * cols] = inside ? xc[iy * d.w + ix] : 0.f;
            }
          }
        }
    }
}

// The adjoint: dx[n, c, iy, ix] = sum of the dxcol entries im2col copied x[n, c, iy, ix] to.
void col2im(const ConvDims& d, const float* dxcol, float* dx) {
  const int64_t oh = d.oh(), ow = d.ow(), map_out = oh * ow, cols = d.c * d.r * d.s;
#pragma omp parallel for schedule(static) if (d.n * map_out * cols >= (1 << 16))
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t c = 0; c < d.c; ++c) {
      float* dxc = dx + (n * d.c + c) * d.h * d.w;
      for (int64_t t = 0; t < d.h * d.w; ++t) dxc[t] = 0.f;
      for (int64_t ty = 0; ty < d.r; ++ty)
        for (int64_t tx = 0; tx < d.s; ++tx) {
          const float* in = dxcol + n * map_out * cols + (c * d.r + ty) * d.s + tx;
          for (int64_t oy = 0; oy < oh; ++oy) {
            const int64_t iy = oy * d.stride - d.pad + ty;
            if (iy < 0 || iy >= d.h) continue;
            for (int64_t ox = 0; ox < ow; ++ox) {
              const int64_t ix = ox * d.stride - d.pad + tx;
              if (ix >= 0 && ix < d.w) dxc[iy * d.w + ix] += in[(oy * ow + ox) * cols];
            }
          }
        }
    }
}

// out[i, b, a] = in[i, a, b] for each of `count` [rows, cols] matrices: NCHW y [n, k, map] to
// the matmul's rows [n*map, k] (rows = k, cols = map) and back (rows = map, cols = k).
void transpose_each(int64_t count, int64_t rows, int64_t cols, const float* in, float* out) {
#pragma omp parallel for schedule(static) if (count * rows * cols >= (1 << 16))
  for (int64_t i = 0; i < count; ++i)
    for (int64_t a = 0; a < rows; ++a)
      for (int64_t b = 0; b < cols; ++b)
        out[(i * cols + b) * rows + a] = in[(i * rows + a) * cols + b];
}

// ---- the three directions as matmuls (unfold and im2col) ----------------------------------

// c = a x b on one of the node's matmuls, made on first use.
void run_matmul(Context& cx, dnnl::matmul& mm, const dnnl::memory::desc& a_md, const float* a,
                const dnnl::memory::desc& b_md, const float* b, const dnnl::memory::desc& c_md,
                float* c) {
  if (!mm) mm = dnnl::matmul({{a_md, b_md, c_md}, cx.engine});
  mm.execute(cx.stream, {{DNNL_ARG_SRC, mem(cx, a_md, a)},
                         {DNNL_ARG_WEIGHTS, mem(cx, b_md, b)},
                         {DNNL_ARG_DST, mem(cx, c_md, c)}});
}

// The scratch of an im2col call: patches (or their gradient), then the y rows.
struct Im2colScratch {
  float *cols, *rows;
};
Im2colScratch im2col_scratch(Context& cx, const ConvPrims& p) {
  float* s = cx.scratch(p.scratch_floats);
  return {s, s + p.x_mat.get_size() / sizeof(float)};
}

// y_mat = x_mat · w_mat^T
void matmul_forward(Context& cx, ConvPrims& p, const float* x, const float* w, float* y) {
  const ConvDims& d = p.dims;
  if (p.mode == Mode::unfold) {
    float* wu = cx.scratch(p.scratch_floats);
    unfold_weights(p, w, wu);
    return run_matmul(cx, p.mm_fwd, p.x_mat, x, p.w_mat_t, wu, p.y_mat, y);
  }
  const Im2colScratch s = im2col_scratch(cx, p);
  im2col(d, x, s.cols);
  run_matmul(cx, p.mm_fwd, p.x_mat, s.cols, p.w_mat_t, w, p.y_mat, s.rows);
  transpose_each(d.n, d.oh() * d.ow(), d.k, s.rows, y);
}

// dx_mat = dy_mat · w_mat
void matmul_backward_data(Context& cx, ConvPrims& p, const float* dy, const float* w, float* dx) {
  const ConvDims& d = p.dims;
  if (p.mode == Mode::unfold) {
    float* wu = cx.scratch(p.scratch_floats);
    unfold_weights(p, w, wu);
    return run_matmul(cx, p.mm_bwd_data, p.y_mat, dy, p.w_mat, wu, p.x_mat, dx);
  }
  const Im2colScratch s = im2col_scratch(cx, p);
  transpose_each(d.n, d.k, d.oh() * d.ow(), dy, s.rows);
  run_matmul(cx, p.mm_bwd_data, p.y_mat, s.rows, p.w_mat, w, p.x_mat, s.cols);
  col2im(d, s.cols, dx);
}

// dw_mat = dy_mat^T · x_mat
void matmul_backward_weights(Context& cx, ConvPrims& p, const float* x, const float* dy,
                             float* dw) {
  const ConvDims& d = p.dims;
  if (p.mode == Mode::unfold) {
    float* dwu = cx.scratch(p.scratch_floats);
    run_matmul(cx, p.mm_bwd_weights, p.y_mat_t, dy, p.x_mat, x, p.w_mat, dwu);
    return fold_weight_grad(p, dwu, dw);
  }
  const Im2colScratch s = im2col_scratch(cx, p);
  im2col(d, x, s.cols);
  transpose_each(d.n, d.k, d.oh() * d.ow(), dy, s.rows);
  run_matmul(cx, p.mm_bwd_weights, p.y_mat_t, s.rows, p.x_mat, s.cols, p.w_mat, dw);
}

// ---- oneDNN convolution primitives -----------------------------------------------------------

void conv2d_forward(void* ctx, OpCache& c, const ConvDims& d, const float* x, const float* w,
                    float* y) {
  Context& cx = context(ctx);
  ConvPrims& p = prims(c, cx, d);
  if (p.mode == Mode::unfold || p.mode == Mode::im2col) return matmul_forward(cx, p, x, w, y);
  if (!p.fwd) {  // made on first use
    p.fwd = dnnl::convolution_forward(p.fwd_pd);
    p.f_x.init(cx, p.x_md, p.fwd_pd.src_desc(), true);
    p.f_w.init(cx, p.w_md, p.fwd_pd.weights_desc(), true);
    p.f_y.init(cx, p.y_md, p.fwd_pd.dst_desc(), false);
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
  if (p.mode == Mode::unfold || p.mode == Mode::im2col)
    return matmul_backward_data(cx, p, dy, w, dx);
  if (!p.bwd_data) {
    dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct,
                                               md_for(p, p.x_md), md_for(p, p.w_md),
                                               md_for(p, p.y_md), p.strides, p.pad, p.pad);
    dnnl::convolution_backward_data::primitive_desc pd(desc, cx.engine, p.fwd_pd);
    p.bwd_data = dnnl::convolution_backward_data(pd);
    p.d_dy.init(cx, p.y_md, pd.diff_dst_desc(), true);
    p.d_w.init(cx, p.w_md, pd.weights_desc(), true);
    p.d_dx.init(cx, p.x_md, pd.diff_src_desc(), false);
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
  if (p.mode == Mode::unfold || p.mode == Mode::im2col)
    return matmul_backward_weights(cx, p, x, dy, dw);
  if (!p.bwd_weights) {
    dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct,
                                                  md_for(p, p.x_md), md_for(p, p.w_md),
                                                  md_for(p, p.y_md), p.strides, p.pad, p.pad);
    dnnl::convolution_backward_weights::primitive_desc pd(desc, cx.engine, p.fwd_pd);
    p.bwd_weights = dnnl::convolution_backward_weights(pd);
    p.w_x.init(cx, p.x_md, pd.src_desc(), true);
    p.w_dy.init(cx, p.y_md, pd.diff_dst_desc(), true);
    p.w_dw.init(cx, p.w_md, pd.diff_weights_desc(), false);
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
