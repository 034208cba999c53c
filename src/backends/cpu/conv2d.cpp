// Convolution on oneDNN. Shapes (NCHW, weights OIHW): x [n, c, h, w], W [k, c, r, s],
// y [n, k, oh, ow]; square stride and padding, no bias (BN follows every ResNet convolution).
// Under NHWC (ConvDims::layout) x and y are [n, h, w, c] and [n, oh, ow, k], W stays OIHW.
//   forward          y  = conv(x, W)
//   backward data    dx = conv^T(dy, W)
//   backward weights dW = corr(x, dy)
// The caller's tensors are plain NCHW/OIHW in and out, whatever runs inside. Each direction of
// each node picks its implementation (ConvMode, cpu_context.h) once, on first use, from the
// candidates for its shape (conv2d_candidates(), with the measurements behind them); where there
// are several, the first call of that shape and direction times each and keeps the fastest for
// every node of the shape (choose()). Primitives and matmuls are made on first use and reused
// every step; memory objects are only re-pointed per call.
//   plain     oneDNN convolution on the caller's layout (its im2col + jit sgemm, "gemm:jit");
//   blocked   oneDNN convolution with format_tag::any: its blocked layout (nChw8c, OIhw8i8o on
//             AVX2; nChw16c on AVX-512) and direct kernel ("jit:avx2"; under bf16
//             "jit_bf16:avx512_core_bf16"), with reorders in and out around it;
//   unfold    a map no larger than the kernel: a dense layer through unfolded weights;
//   im2col    the patches of all images as the rows of one matrix, one matmul;
//   channels  a 1x1 kernel: one matmul over channel-major copies ([c, n*oh*ow]).
// Under NHWC, im2col's patch rows [n*oh*ow, r*s*c] are copies of whole pixels and its output
// rows [n*oh*ow, k] are y itself: a 1x1 convolution with stride 1 is one matmul on x and y in
// place, with no copy at all. channels is not needed there.
// Under bf16 every mode reads bf16 operands and writes fp32: plain and blocked ask oneDNN for
// bf16 inputs (the reorders in convert, in the same pass that changes layout), the matmul modes
// convert their two operands as they hand them over (run_matmul).
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
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

enum Dir : int { kForward, kBackwardData, kBackwardWeights };

// Largest output map (oh*ow) whose convolution runs as one im2col matmul over all images.
constexpr int64_t kIm2colMaxMap = 4;

}  // namespace

// The implementations that may run a shape, in order of preference when none is timed
// (--deterministic); where there are more than one, choose() times them.
std::vector<ConvMode> conv2d_candidates(const ConvDims& d, bool bf16) {
  const int64_t map_in = d.h * d.w, map_out = d.oh() * d.ow(), taps = d.r * d.s;
  if (d.layout == Layout::nhwc) {
    // oneDNN's NHWC kernels (brgconv) run 1x1 and 3x3 convolutions on 8x8-4x4 maps near its
    // matmul rate; on smaller maps the matmul forms win, as under NCHW.
    if (taps > 1 && map_in <= taps) return {ConvMode::unfold};
    if ((taps == 1 && d.pad == 0) || map_out <= kIm2colMaxMap)
      return {ConvMode::im2col, ConvMode::plain};
    return {ConvMode::plain, ConvMode::blocked};
  }
  // Small maps (ResNet-50/CIFAR's layer3 at 2x2 and layer4 at 1x1): oneDNN's kernels are built
  // for large maps and run far below peak there, their backward passes slowest (BENCHMARKS.md,
  // "Small-map convolutions as matmuls"). There a convolution is a plain matrix product over a few
  // positions, so it runs as oneDNN matmuls:
  //   unfold  kernel > 1x1 and an input map no larger than the kernel: a dense layer from
  //           x [n, c*h*w] to y [n, k*oh*ow] through an unfolded weight matrix holding each
  //           (output, input) position pair's tap. No padding taps are multiplied, and both
  //           activations are used in place (NCHW is already that matrix).
  //   im2col  any other kernel on an output map of at most kIm2colMaxMap positions: the
  //           patches of all images as rows [n*oh*ow, c*r*s] (for 1x1 a transpose), one
  //           matmul with W [k, c*r*s], and y transposed back. oneDNN's own gemm convolution
  //           does this one image at a time, a matmul with 4 or 1 columns.
  // kIm2colMaxMap stays at 4: at 16 (ResNet's 4x4 layer2) the step measured slower.
  if (taps > 1 && map_in <= taps) return {ConvMode::unfold};
  // 1x1 kernels (two thirds of ResNet-50's multiply-adds) are matrix products whichever way
  // they run, and no one way won everywhere (BackendOpsPerf, batch 128, ms fwd / bwd-data /
  // bwd-weights): 1024->256 on 2x2: im2col 3.6 / 3.3 / 3.7, channels 2.5 / 2.4 / 2.4;
  // 64->64 on 8x8: plain 0.41 / 0.46 / 0.56, channels 0.81 / 0.76 / 1.03; 512->256 on 4x4:
  // plain 3.5 / 4.5 / 5.8, channels 4.5 / 4.0 / 4.6. So each direction times both.
  // (im2col as a third candidate at 8x8 and 4x4 was never chosen there.)
  const ConvMode rows = map_out <= kIm2colMaxMap ? ConvMode::im2col : ConvMode::plain;
  // bf16 (AVX512-BF16, batch 128, 2 threads, BackendOpsPerf): oneDNN's blocked bf16 kernels
  // (nChw16c) beat the matmul forms in the forward and data gradient of most 1x1 and 3x3 stride-2
  // convolutions on 8x8 to 2x2 maps, up to 2x (1x1 1024->256 on 2x2: 0.70 vs 1.01 ms forward,
  // 0.54 vs 1.02 data; 3x3 256 stride 2 on 4x4: 1.44 vs 2.92 forward), and lose their weight
  // gradients 1.3-12x, and everything on 1x1 maps. So under bf16 they join the timed candidates
  // there; on a 1x1 output map they never won.
  const bool bf16_blocked = bf16 && map_out > 1;
  if (taps == 1 && d.pad == 0) {
    if (bf16_blocked) return {rows, ConvMode::channels, ConvMode::blocked};
    return {rows, ConvMode::channels};
  }
  if (map_out <= kIm2colMaxMap) {
    if (bf16_blocked) return {ConvMode::im2col, ConvMode::blocked};
    return {ConvMode::im2col};
  }
  // Measured (AVX2, batch 128, one thread, CPU time; see the report in backend_ops_test's perf
  // mode): for 3x3 and 7x7 kernels the blocked direct kernel wins even with the reorders
  // (3x3 64->64 on 8x8: 8.1 vs 10.3 ms fwd, 7.1 vs 11.1 bwd-data; 3x3 256 on 2x2: 14 vs 23 fwd,
  // 9 vs 36 bwd-data), while for 1x1 the reorders cost more than the kernel saves. (With im2col
  // timed beside blocked for 3x3 on 8x8 and 4x4, blocked won every direction of every layer.)
  return {taps > 1 ? ConvMode::blocked : ConvMode::plain};
}

const char* conv_mode_name(ConvMode m) {
  switch (m) {
    case ConvMode::plain:
      return "plain";
    case ConvMode::blocked:
      return "blocked";
    case ConvMode::unfold:
      return "unfold";
    case ConvMode::im2col:
      return "im2col";
    case ConvMode::channels:
      return "channels";
  }
  return "?";
}

namespace {

// One matrix-product form of the convolution: its three matmuls (made on first use) and the
// row-major matrices they read; "_t" descriptors read one transposed.
struct MatmulForm {
  dnnl::matmul mm[3];  // by Dir
  dnnl::memory::desc x, y, w, w_t, y_t, x_t;
  size_t scratch_floats = 0;
};

// plain or blocked: one oneDNN convolution of the node. The forward pd (made with the node) is
// also the backward hint; the primitives and their ports are made on first use.
struct ConvPrimitives {
  bool blocked = false;  // ask oneDNN for its own layout (tag::any)
  // The weights in oneDNN's own layout even where the activations are the caller's: its NHWC
  // kernels take no OIHW weights (it would run its reference loops, 1 GFLOP/s).
  bool any_weights = false;
  dt operand = dt::f32;  // what the convolutions read: f32, or bf16 under bf16
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_weights;
  Port f_x, f_w, f_y;    // forward
  Port d_dy, d_w, d_dx;  // backward data
  Port w_x, w_dy, w_dw;  // backward weights

  // The descriptor the primitive is asked for in place of the caller's plain one: an input
  // (read: x, W, dy) in the operand type, an output (written: y, dx, dW) in fp32.
  dnnl::memory::desc in(const dnnl::memory::desc& plain) const { return conv_md(plain, operand); }
  dnnl::memory::desc out(const dnnl::memory::desc& plain) const { return conv_md(plain, dt::f32); }
  // The weights W (read) and dW (written).
  dnnl::memory::desc w_in(const dnnl::memory::desc& plain) const {
    return any_weights ? dnnl::memory::desc(plain.dims(), operand, tag::any) : in(plain);
  }
  dnnl::memory::desc w_out(const dnnl::memory::desc& plain) const {
    return any_weights ? dnnl::memory::desc(plain.dims(), dt::f32, tag::any) : out(plain);
  }
  dnnl::memory::desc conv_md(const dnnl::memory::desc& plain, dt type) const {
    if (blocked) return {plain.dims(), type, tag::any};
    const dnnl_dims_t& strides = plain.data.format_desc.blocking.strides;
    return {plain.dims(), type, dnnl::memory::dims(strides, strides + plain.data.ndims)};
  }
};

struct ConvPrims {
  ConvDims dims;
  std::vector<ConvMode> cands;
  std::optional<ConvMode> mode[3];      // by Dir, once chosen
  dnnl::memory::desc x_md, w_md, y_md;  // fp32 in the caller's layout
  dnnl::memory::dims strides, pad;
  ConvPrimitives conv[2];  // [blocked]: plain, blocked
  // unfold: x [n, c*h*w], y [n, k*oh*ow], w the unfolded weights [k*oh*ow, c*h*w] (NHWC: the
  // same matrices with position-major rows and columns).
  // im2col: x the patches [n*oh*ow, c*r*s], y rows [n*oh*ow, k], w = W [k, c*r*s] as it is
  // (NHWC: patches [n*oh*ow, r*s*c] and W permuted to [k, r*s*c], unless 1x1).
  MatmulForm rows;
  // channels: x [c, n*oh*ow], y [k, n*oh*ow], w = W [k, c].
  MatmulForm chan;
  std::vector<int32_t> tap_of;  // unfold: [map_out * map_in] -> tap index r*s, or -1
};

bool has(const std::vector<ConvMode>& c, ConvMode m) {
  return std::find(c.begin(), c.end(), m) != c.end();
}

void init_rows(ConvPrims* p) {
  const ConvDims& d = p->dims;
  const int64_t map_in = d.h * d.w, map_out = d.oh() * d.ow();
  int64_t rows, x_cols, y_cols;  // rows of x and y; columns of x and y
  MatmulForm& f = p->rows;
  if (has(p->cands, ConvMode::unfold)) {
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
    f.scratch_floats = size_t(y_cols * x_cols);
  } else {
    rows = d.n * map_out, x_cols = d.c * d.r * d.s, y_cols = d.k;
    // NCHW: patches and y's rows; NHWC: patches and the permuted weights.
    f.scratch_floats =
        size_t(rows * x_cols + (d.layout == Layout::nhwc ? y_cols * x_cols : rows * y_cols));
  }
  f.x = {{rows, x_cols}, dt::f32, tag::ab};
  f.y = {{rows, y_cols}, dt::f32, tag::ab};
  f.w = {{y_cols, x_cols}, dt::f32, tag::ab};
  f.w_t = {{x_cols, y_cols}, dt::f32, tag::ba};
  f.y_t = {{y_cols, rows}, dt::f32, tag::ba};
}

void init_channels(ConvPrims* p) {
  const ConvDims& d = p->dims;
  const int64_t cols = d.n * d.oh() * d.ow();
  MatmulForm& f = p->chan;
  f.x = {{d.c, cols}, dt::f32, tag::ab};
  f.x_t = {{cols, d.c}, dt::f32, tag::ba};
  f.y = {{d.k, cols}, dt::f32, tag::ab};
  f.w = {{d.k, d.c}, dt::f32, tag::ab};
  f.w_t = {{d.c, d.k}, dt::f32, tag::ba};
  f.scratch_floats = size_t(cols * (d.c + d.k));
}

ConvPrims* make_prims(const Context& cx, const ConvDims& d) {
  auto* p = new ConvPrims();
  p->dims = d;
  p->cands = conv2d_candidates(d, cx.bf16());
  const dnnl::memory::dims xd = {d.n, d.c, d.h, d.w}, wd = {d.k, d.c, d.r, d.s},
                           yd = {d.n, d.k, d.oh(), d.ow()};
  const tag act = d.layout == Layout::nhwc ? tag::nhwc : tag::nchw;
  p->x_md = {xd, dt::f32, act};
  p->w_md = {wd, dt::f32, tag::oihw};
  p->y_md = {yd, dt::f32, act};
  if (has(p->cands, ConvMode::unfold) || has(p->cands, ConvMode::im2col)) init_rows(p);
  if (has(p->cands, ConvMode::channels)) init_channels(p);
  p->strides = {d.stride, d.stride};
  p->pad = {d.pad, d.pad};  // symmetric, as PyTorch: oh() floors, the right edge may fall short
  for (bool blocked : {false, true}) {
    if (!has(p->cands, blocked ? ConvMode::blocked : ConvMode::plain)) continue;
    ConvPrimitives& c = p->conv[blocked];
    c.blocked = blocked, c.operand = cx.operand_type();
    c.any_weights = d.layout == Layout::nhwc;
    dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, c.in(p->x_md),
        c.w_in(p->w_md), c.out(p->y_md), p->strides, p->pad, p->pad);
    c.fwd_pd = dnnl::convolution_forward::primitive_desc(desc, cx.engine);
  }
  return p;
}

ConvPrims& prims(OpCache& c, const Context& cx, const ConvDims& d) {
  auto* p = c.get<ConvPrims>();
  if (!p || !(p->dims == d)) {
    if (c.destroy) c.destroy(c.impl), c.impl = nullptr, c.destroy = nullptr;
    p = c.set(make_prims(cx, d));
  }
  return *p;
}

dnnl::memory mem(const Context& cx, const dnnl::memory::desc& md, const void* ptr) {
  return dnnl::memory(md, cx.engine, const_cast<void*>(ptr));
}

// ---- unfold: a convolution on a map no larger than its kernel is a dense layer --------------

// Where (k, o) and (c, i) sit in the unfolded matrix: its row is k * k_step + o * o_step, its
// column c * c_step + i * i_step (channel-major under NCHW, position-major under NHWC: the
// flattening of y and x).
struct UnfoldSteps {
  int64_t k_step, o_step, c_step, i_step;
};
UnfoldSteps unfold_steps(const ConvDims& d) {
  if (d.layout == Layout::nhwc) return {1, d.k, 1, d.c};
  return {d.oh() * d.ow(), 1, d.h * d.w, 1};
}

// wu[(k, o), (c, i)] = W[k, c, tap(o, i)], zero where output position o does not see input i.
void unfold_weights(const ConvPrims& p, const float* w, float* wu) {
  const ConvDims& d = p.dims;
  const int64_t map_in = d.h * d.w, map_out = d.oh() * d.ow(), rs = d.r * d.s;
  const int64_t cols = d.c * map_in;
  const UnfoldSteps u = unfold_steps(d);
  const int32_t* tap_of = p.tap_of.data();
#pragma omp parallel for schedule(static) if (d.k * d.c * map_in * map_out >= (1 << 16))
  for (int64_t k = 0; k < d.k; ++k)
    for (int64_t o = 0; o < map_out; ++o) {
      float* row = wu + (k * u.k_step + o * u.o_step) * cols;
      const int32_t* taps = tap_of + o * map_in;
      for (int64_t c = 0; c < d.c; ++c) {
        const float* wkc = w + (k * d.c + c) * rs;
        for (int64_t i = 0; i < map_in; ++i)
          row[c * u.c_step + i * u.i_step] = taps[i] < 0 ? 0.f : wkc[taps[i]];
      }
    }
}

// The reverse: dW[k, c, t] = sum of dwu[(k, o), (c, i)] over the pairs that use tap t.
void fold_weight_grad(const ConvPrims& p, const float* dwu, float* dw) {
  const ConvDims& d = p.dims;
  const int64_t map_in = d.h * d.w, map_out = d.oh() * d.ow(), rs = d.r * d.s;
  const UnfoldSteps u = unfold_steps(d);
  const int32_t* tap_of = p.tap_of.data();
#pragma omp parallel for schedule(static) if (d.k * d.c * map_in * map_out >= (1 << 16))
  for (int64_t k = 0; k < d.k; ++k) {
    float* dwk = dw + k * d.c * rs;
    for (int64_t t = 0; t < d.c * rs; ++t) dwk[t] = 0.f;
    for (int64_t o = 0; o < map_out; ++o) {
      const float* row = dwu + (k * u.k_step + o * u.o_step) * d.c * map_in;
      const int32_t* taps = tap_of + o * map_in;
      for (int64_t c = 0; c < d.c; ++c)
        for (int64_t i = 0; i < map_in; ++i)
          if (taps[i] >= 0) dwk[c * rs + taps[i]] += row[c * u.c_step + i * u.i_step];
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

// ---- unfold and im2col as matmuls -----------------------------------------------------------

// The same plain (strided, unblocked) matrix with elements of another type.
dnnl::memory::desc as_type(const dnnl::memory::desc& md, dt type) {
  const dnnl_dims_t& strides = md.data.format_desc.blocking.strides;
  return {md.dims(), type, dnnl::memory::dims(strides, strides + md.data.ndims)};
}

// c = a x b on one of the node's matmuls, made on first use. Under bf16 it reads bf16 copies of
// a and b (their layout unchanged: an element-wise conversion of the whole buffer).
void run_matmul(Context& cx, dnnl::matmul& mm, const dnnl::memory::desc& a_md, const float* a,
                const dnnl::memory::desc& b_md, const float* b, const dnnl::memory::desc& c_md,
                float* c) {
  const dt op = cx.operand_type();
  const dnnl::memory::desc a_op = as_type(a_md, op), b_op = as_type(b_md, op);
  if (!mm) mm = dnnl::matmul({{a_op, b_op, c_md}, cx.engine});
  const size_t a_count = a_md.get_size() / sizeof(float), b_count = b_md.get_size() / sizeof(float);
  mm.execute(cx.stream, {{DNNL_ARG_SRC, mem(cx, a_op, cx.operand(0, a, a_count))},
                         {DNNL_ARG_WEIGHTS, mem(cx, b_op, cx.operand(1, b, b_count))},
                         {DNNL_ARG_DST, mem(cx, c_md, c)}});
}

// The scratch of a matmul-form call: the x side, then the y side (im2col: patches, y rows).
struct Scratch {
  float *x, *y;
};
Scratch scratch(Context& cx, const MatmulForm& f) {
  float* s = cx.scratch(f.scratch_floats);
  return {s, s + f.x.get_size() / sizeof(float)};
}

// y_mat = x_mat · w_mat^T
void unfold_forward(Context& cx, ConvPrims& p, const float* x, const float* w, float* y) {
  MatmulForm& f = p.rows;
  float* wu = cx.scratch(f.scratch_floats);
  unfold_weights(p, w, wu);
  run_matmul(cx, f.mm[kForward], f.x, x, f.w_t, wu, f.y, y);
}
// With a single output position y [n, k, 1] is already the rows [n, k]; with a 1x1 kernel on a
// 1x1 map x [n, c, 1] is already the patches. Those are used in place, not copied.
bool y_is_rows(const ConvDims& d) {
  return d.oh() * d.ow() == 1;
}
bool x_is_patches(const ConvDims& d) {
  return d.r * d.s == 1 && d.h * d.w == 1;
}

void im2col_forward(Context& cx, ConvPrims& p, const float* x, const float* w, float* y) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.rows;
  const Scratch s = scratch(cx, f);
  const float* cols = x_is_patches(d) ? x : (im2col(d, x, s.x), s.x);
  float* rows = y_is_rows(d) ? y : s.y;
  run_matmul(cx, f.mm[kForward], f.x, cols, f.w_t, w, f.y, rows);
  if (rows != y) transpose_each(d.n, d.oh() * d.ow(), d.k, rows, y);
}

// dx_mat = dy_mat · w_mat
void unfold_backward_data(Context& cx, ConvPrims& p, const float* dy, const float* w, float* dx) {
  MatmulForm& f = p.rows;
  float* wu = cx.scratch(f.scratch_floats);
  unfold_weights(p, w, wu);
  run_matmul(cx, f.mm[kBackwardData], f.y, dy, f.w, wu, f.x, dx);
}
void im2col_backward_data(Context& cx, ConvPrims& p, const float* dy, const float* w, float* dx) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.rows;
  // As in channels mode: the weight gradient, just before, may have left dy's rows here.
  const bool have_dy = cx.scratch_key == &f && cx.scratch_source == dy;
  const Scratch s = scratch(cx, f);
  const float* rows = dy;
  if (!y_is_rows(d)) {
    if (!have_dy) transpose_each(d.n, d.k, d.oh() * d.ow(), dy, s.y);
    rows = s.y;
  }
  float* cols = x_is_patches(d) ? dx : s.x;
  run_matmul(cx, f.mm[kBackwardData], f.y, rows, f.w, w, f.x, cols);
  if (cols != dx) col2im(d, cols, dx);
}

// dw_mat = dy_mat^T · x_mat
void unfold_backward_weights(Context& cx, ConvPrims& p, const float* x, const float* dy,
                             float* dw) {
  MatmulForm& f = p.rows;
  float* dwu = cx.scratch(f.scratch_floats);
  run_matmul(cx, f.mm[kBackwardWeights], f.y_t, dy, f.x, x, f.w, dwu);
  fold_weight_grad(p, dwu, dw);
}
void im2col_backward_weights(Context& cx, ConvPrims& p, const float* x, const float* dy,
                             float* dw) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.rows;
  const Scratch s = scratch(cx, f);
  const float* cols = x_is_patches(d) ? x : (im2col(d, x, s.x), s.x);
  const float* rows = y_is_rows(d) ? dy : (transpose_each(d.n, d.k, d.oh() * d.ow(), dy, s.y), s.y);
  run_matmul(cx, f.mm[kBackwardWeights], f.y_t, rows, f.x, cols, f.w, dw);
  if (rows == s.y) cx.scratch_key = &f, cx.scratch_source = dy;
}

// ---- im2col under NHWC: patches are whole pixels, y is the rows ----------------------------

// xcol[(n, oy, ox), (ty, tx, c)] = x[n, oy*stride - pad + ty, ox*stride - pad + tx, c], zero in
// the padding: one copy of c floats per tap.
void im2col_nhwc(const ConvDims& d, const float* x, float* xcol) {
  const int64_t oh = d.oh(), ow = d.ow(), cols = d.r * d.s * d.c;
  const size_t pixel = size_t(d.c) * sizeof(float);
#pragma omp parallel for schedule(static) if (d.n * oh * ow * cols >= (1 << 16))
  for (int64_t row = 0; row < d.n * oh * ow; ++row) {
    const int64_t n = row / (oh * ow), oy = row / ow % oh, ox = row % ow;
    float* out = xcol + row * cols;
    for (int64_t ty = 0; ty < d.r; ++ty)
      for (int64_t tx = 0; tx < d.s; ++tx, out += d.c) {
        const int64_t iy = oy * d.stride - d.pad + ty, ix = ox * d.stride - d.pad + tx;
        if (iy >= 0 && iy < d.h && ix >= 0 && ix < d.w)
          std::memcpy(out, x + ((n * d.h + iy) * d.w + ix) * d.c, pixel);
        else
          std::memset(out, 0, pixel);
      }
  }
}

// The adjoint: dx[n, iy, ix, c] = sum of the dxcol entries im2col_nhwc copied it to. One image
// per iteration: its patches only touch its own pixels.
void col2im_nhwc(const ConvDims& d, const float* dxcol, float* dx) {
  const int64_t oh = d.oh(), ow = d.ow(), cols = d.r * d.s * d.c, image = d.h * d.w * d.c;
#pragma omp parallel for schedule(static) if (d.n * oh * ow * cols >= (1 << 16))
  for (int64_t n = 0; n < d.n; ++n) {
    float* dxn = dx + n * image;
    std::memset(dxn, 0, size_t(image) * sizeof(float));
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        const float* in = dxcol + ((n * oh + oy) * ow + ox) * cols;
        for (int64_t ty = 0; ty < d.r; ++ty)
          for (int64_t tx = 0; tx < d.s; ++tx, in += d.c) {
            const int64_t iy = oy * d.stride - d.pad + ty, ix = ox * d.stride - d.pad + tx;
            if (iy < 0 || iy >= d.h || ix < 0 || ix >= d.w) continue;
            float* out = dxn + (iy * d.w + ix) * d.c;
#pragma omp simd
            for (int64_t c = 0; c < d.c; ++c) out[c] += in[c];
          }
      }
  }
}

// W [k, c, t] <-> [k, t, c], the patches' column order (t = ty * s + tx).
void weights_to_tap_major(const ConvDims& d, const float* w, float* wt) {
  const int64_t rs = d.r * d.s;
#pragma omp parallel for schedule(static) if (d.k * d.c * rs >= (1 << 16))
  for (int64_t k = 0; k < d.k; ++k)
    for (int64_t c = 0; c < d.c; ++c)
      for (int64_t t = 0; t < rs; ++t) wt[(k * rs + t) * d.c + c] = w[(k * d.c + c) * rs + t];
}
void weights_from_tap_major(const ConvDims& d, const float* wt, float* w) {
  const int64_t rs = d.r * d.s;
#pragma omp parallel for schedule(static) if (d.k * d.c * rs >= (1 << 16))
  for (int64_t k = 0; k < d.k; ++k)
    for (int64_t c = 0; c < d.c; ++c)
      for (int64_t t = 0; t < rs; ++t) w[(k * d.c + c) * rs + t] = wt[(k * rs + t) * d.c + c];
}

// x is already the patches (and dx their adjoint) for a 1x1 kernel with stride 1.
bool x_is_patches_nhwc(const ConvDims& d) {
  return d.r * d.s == 1 && d.stride == 1 && d.pad == 0;
}
// y = patches · W^T
void im2col_nhwc_forward(Context& cx, ConvPrims& p, const float* x, const float* w, float* y) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.rows;
  const Scratch s = scratch(cx, f);  // patches, tap-major weights
  const float* cols = x_is_patches_nhwc(d) ? x : (im2col_nhwc(d, x, s.x), s.x);
  const float* wt = d.r * d.s == 1 ? w : (weights_to_tap_major(d, w, s.y), s.y);
  run_matmul(cx, f.mm[kForward], f.x, cols, f.w_t, wt, f.y, y);
}
// dpatches = dy · W, folded back onto dx
void im2col_nhwc_backward_data(Context& cx, ConvPrims& p, const float* dy, const float* w,
                               float* dx) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.rows;
  const Scratch s = scratch(cx, f);  // patches, tap-major weights
  const float* wt = d.r * d.s == 1 ? w : (weights_to_tap_major(d, w, s.y), s.y);
  float* cols = x_is_patches_nhwc(d) ? dx : s.x;
  run_matmul(cx, f.mm[kBackwardData], f.y, dy, f.w, wt, f.x, cols);
  if (cols != dx) col2im_nhwc(d, cols, dx);
}
// dW = dy^T · patches
void im2col_nhwc_backward_weights(Context& cx, ConvPrims& p, const float* x, const float* dy,
                                  float* dw) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.rows;
  const Scratch s = scratch(cx, f);  // patches, tap-major weights
  const float* cols = x_is_patches_nhwc(d) ? x : (im2col_nhwc(d, x, s.x), s.x);
  float* dwt = d.r * d.s == 1 ? dw : s.y;
  run_matmul(cx, f.mm[kBackwardWeights], f.y_t, dy, f.x, cols, f.w, dwt);
  if (dwt != dw) weights_from_tap_major(d, dwt, dw);
}

// ---- channels: a 1x1 convolution is one matmul over channel-major copies -------------------

// out[c, n, :] = in[n, c, :] for runs of `map` floats (NCHW to CNHW), and back.
void to_channel_major(int64_t n, int64_t c, int64_t map, const float* in, float* out) {
#pragma omp parallel for schedule(static) if (n * c * map >= (1 << 16))
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t ni = 0; ni < n; ++ni)
      std::memcpy(out + (ci * n + ni) * map, in + (ni * c + ci) * map, size_t(map) * sizeof(float));
}
void from_channel_major(int64_t n, int64_t c, int64_t map, const float* in, float* out) {
#pragma omp parallel for schedule(static) if (n * c * map >= (1 << 16))
  for (int64_t ni = 0; ni < n; ++ni)
    for (int64_t ci = 0; ci < c; ++ci)
      std::memcpy(out + (ni * c + ci) * map, in + (ci * n + ni) * map, size_t(map) * sizeof(float));
}

// A strided 1x1 convolution reads every stride-th position: xcm[c, n, oy, ox] =
// x[n, c, oy*stride, ox*stride]; its adjoint writes them back and zeroes the rest.
void sample_to_channel_major(const ConvDims& d, const float* x, float* xcm) {
  const int64_t oh = d.oh(), ow = d.ow();
#pragma omp parallel for schedule(static) if (d.n * d.c * oh * ow >= (1 << 16))
  for (int64_t c = 0; c < d.c; ++c)
    for (int64_t n = 0; n < d.n; ++n) {
      const float* in = x + (n * d.c + c) * d.h * d.w;
      float* out = xcm + (c * d.n + n) * oh * ow;
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox)
          out[oy * ow + ox] = in[oy * d.stride * d.w + ox * d.stride];
    }
}
void unsample_from_channel_major(const ConvDims& d, const float* dxcm, float* dx) {
  const int64_t oh = d.oh(), ow = d.ow();
#pragma omp parallel for schedule(static) if (d.n * d.c * d.h * d.w >= (1 << 16))
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t c = 0; c < d.c; ++c) {
      const float* in = dxcm + (c * d.n + n) * oh * ow;
      float* out = dx + (n * d.c + c) * d.h * d.w;
      std::memset(out, 0, size_t(d.h * d.w) * sizeof(float));
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox)
          out[oy * d.stride * d.w + ox * d.stride] = in[oy * ow + ox];
    }
}

void x_to_channel_major(const ConvDims& d, const float* x, float* xcm) {
  if (d.stride == 1) return to_channel_major(d.n, d.c, d.h * d.w, x, xcm);
  sample_to_channel_major(d, x, xcm);
}

// ycm = W · xcm
void channels_forward(Context& cx, ConvPrims& p, const float* x, const float* w, float* y) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.chan;
  const Scratch s = scratch(cx, f);
  x_to_channel_major(d, x, s.x);
  run_matmul(cx, f.mm[kForward], f.w, w, f.x, s.x, f.y, s.y);
  from_channel_major(d.n, d.k, d.oh() * d.ow(), s.y, y);
}

// dxcm = W^T · dycm
void channels_backward_data(Context& cx, ConvPrims& p, const float* dy, const float* w, float* dx) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.chan;
  // The executor computes a node's weight gradient just before its data gradient; when that ran
  // in channels mode too, the scratch still holds dy channel-major.
  const bool have_dy = cx.scratch_key == &f && cx.scratch_source == dy;
  const Scratch s = scratch(cx, f);
  if (!have_dy) to_channel_major(d.n, d.k, d.oh() * d.ow(), dy, s.y);
  run_matmul(cx, f.mm[kBackwardData], f.w_t, w, f.y, s.y, f.x, s.x);
  if (d.stride == 1) return from_channel_major(d.n, d.c, d.h * d.w, s.x, dx);
  unsample_from_channel_major(d, s.x, dx);
}

// dW = dycm · xcm^T
void channels_backward_weights(Context& cx, ConvPrims& p, const float* x, const float* dy,
                               float* dw) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.chan;
  const Scratch s = scratch(cx, f);
  x_to_channel_major(d, x, s.x);
  to_channel_major(d.n, d.k, d.oh() * d.ow(), dy, s.y);
  run_matmul(cx, f.mm[kBackwardWeights], f.y, s.y, f.x_t, s.x, f.w, dw);
  cx.scratch_key = &f, cx.scratch_source = dy;
}

// ---- plain and blocked: oneDNN convolution primitives ----------------------------------------

template <bool kBlocked>
void conv_forward(Context& cx, ConvPrims& p, const float* x, const float* w, float* y) {
  ConvPrimitives& c = p.conv[kBlocked];
  if (!c.fwd) {
    c.fwd = dnnl::convolution_forward(c.fwd_pd);
    c.f_x.init(cx, p.x_md, c.fwd_pd.src_desc(), true);
    c.f_w.init(cx, p.w_md, c.fwd_pd.weights_desc(), true);
    c.f_y.init(cx, p.y_md, c.fwd_pd.dst_desc(), false);
  }
  const auto& mx = c.f_x.bind(x);
  const auto& mw = c.f_w.bind(w);
  const auto& my = c.f_y.bind(y);
  c.f_x.in(cx.stream), c.f_w.in(cx.stream);
  c.fwd.execute(cx.stream, {{DNNL_ARG_SRC, mx}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, my}});
  c.f_y.out(cx.stream);
}

template <bool kBlocked>
void conv_backward_data(Context& cx, ConvPrims& p, const float* dy, const float* w, float* dx) {
  ConvPrimitives& c = p.conv[kBlocked];
  if (!c.bwd_data) {
    dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, c.out(p.x_md),
                                               c.w_in(p.w_md), c.in(p.y_md), p.strides, p.pad,
                                               p.pad);
    dnnl::convolution_backward_data::primitive_desc pd(desc, cx.engine, c.fwd_pd);
    c.bwd_data = dnnl::convolution_backward_data(pd);
    c.d_dy.init(cx, p.y_md, pd.diff_dst_desc(), true);
    c.d_w.init(cx, p.w_md, pd.weights_desc(), true);
    c.d_dx.init(cx, p.x_md, pd.diff_src_desc(), false);
  }
  const auto& mdy = c.d_dy.bind(dy);
  const auto& mw = c.d_w.bind(w);
  const auto& mdx = c.d_dx.bind(dx);
  c.d_dy.in(cx.stream), c.d_w.in(cx.stream);
  c.bwd_data.execute(cx.stream,
                     {{DNNL_ARG_DIFF_DST, mdy}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DIFF_SRC, mdx}});
  c.d_dx.out(cx.stream);
}

template <bool kBlocked>
void conv_backward_weights(Context& cx, ConvPrims& p, const float* x, const float* dy, float* dw) {
  ConvPrimitives& c = p.conv[kBlocked];
  if (!c.bwd_weights) {
    dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct, c.in(p.x_md),
                                                  c.w_out(p.w_md), c.in(p.y_md), p.strides, p.pad,
                                                  p.pad);
    dnnl::convolution_backward_weights::primitive_desc pd(desc, cx.engine, c.fwd_pd);
    c.bwd_weights = dnnl::convolution_backward_weights(pd);
    c.w_x.init(cx, p.x_md, pd.src_desc(), true);
    c.w_dy.init(cx, p.y_md, pd.diff_dst_desc(), true);
    c.w_dw.init(cx, p.w_md, pd.diff_weights_desc(), false);
  }
  const auto& mx = c.w_x.bind(x);
  const auto& mdy = c.w_dy.bind(dy);
  const auto& mdw = c.w_dw.bind(dw);
  c.w_x.in(cx.stream), c.w_dy.in(cx.stream);
  c.bwd_weights.execute(
      cx.stream, {{DNNL_ARG_SRC, mx}, {DNNL_ARG_DIFF_DST, mdy}, {DNNL_ARG_DIFF_WEIGHTS, mdw}});
  c.w_dw.out(cx.stream);
}

// ---- choosing and running ---------------------------------------------------------------------

// Every direction as out = f(a, b): forward (x, W) -> y, backward data (dy, W) -> dx, backward
// weights (x, dy) -> dW.
using DirFn = void (*)(Context&, ConvPrims&, const float*, const float*, float*);

DirFn impl(ConvMode m, Dir dir, Layout layout) {
  if (m == ConvMode::im2col && layout == Layout::nhwc) {
    static constexpr DirFn f[] = {im2col_nhwc_forward, im2col_nhwc_backward_data,
                                  im2col_nhwc_backward_weights};
    return f[dir];
  }
  switch (m) {
    case ConvMode::plain: {
      static constexpr DirFn f[] = {conv_forward<false>, conv_backward_data<false>,
                                    conv_backward_weights<false>};
      return f[dir];
    }
    case ConvMode::blocked: {
      static constexpr DirFn f[] = {conv_forward<true>, conv_backward_data<true>,
                                    conv_backward_weights<true>};
      return f[dir];
    }
    case ConvMode::unfold: {
      static constexpr DirFn f[] = {unfold_forward, unfold_backward_data, unfold_backward_weights};
      return f[dir];
    }
    case ConvMode::im2col: {
      static constexpr DirFn f[] = {im2col_forward, im2col_backward_data, im2col_backward_weights};
      return f[dir];
    }
    case ConvMode::channels: {
      static constexpr DirFn f[] = {channels_forward, channels_backward_data,
                                    channels_backward_weights};
      return f[dir];
    }
  }
  return nullptr;
}

// Picks one candidate for this direction: the forced mode where it applies (tests), the only
// or (--deterministic) the first candidate, the choice made for this shape before, or the faster of
// two timed on this call (each once to make its primitives and touch its scratch, then the best of
// kTuneRounds). Every candidate writes the whole output, and the caller runs the chosen one after,
// so the result is the chosen mode's either way.
ConvMode choose(Context& cx, ConvPrims& p, Dir dir, const float* a, const float* b, float* out) {
  const std::vector<ConvMode>& c = p.cands;
  if (cx.conv_mode && has(c, *cx.conv_mode)) return *cx.conv_mode;
  if (c.size() == 1 || cx.deterministic) return c[0];
  const auto key = conv_choice_key(p.dims, dir);
  if (auto it = cx.conv_chosen.find(key); it != cx.conv_chosen.end()) return it->second;
  // Rounds of one run of each candidate, so that a burst of load from elsewhere on the machine
  // slows both rather than one; the best run of each is compared.
  constexpr int kTuneRounds = 3;
  using Clock = std::chrono::steady_clock;
  std::vector<double> best_s(c.size(), INFINITY);
  for (ConvMode m : c) impl(m, dir, p.dims.layout)(cx, p, a, b, out);
  for (int r = 0; r < kTuneRounds; ++r)
    for (size_t i = 0; i < c.size(); ++i) {
      const auto t0 = Clock::now();
      impl(c[i], dir, p.dims.layout)(cx, p, a, b, out);
      cx.stream.wait();
      best_s[i] = std::min(best_s[i], std::chrono::duration<double>(Clock::now() - t0).count());
    }
  const ConvMode best = c[size_t(std::min_element(best_s.begin(), best_s.end()) - best_s.begin())];
  cx.conv_chosen[key] = best;
  return best;
}

// "mode: plain; weights: channels": the first direction chosen (the forward, in a step), then
// each direction whose mode differs from it.
std::string describe(const ConvPrims& p) {
  static const char* dir_name[] = {"forward", "data", "weights"};
  std::optional<ConvMode> first;
  std::string s = "mode: ";
  for (int dir : {kForward, kBackwardWeights, kBackwardData}) {
    if (!p.mode[dir]) continue;
    if (!first) {
      first = p.mode[dir];
      s += conv_mode_name(*first);
    } else if (*p.mode[dir] != *first) {
      s += std::string("; ") + dir_name[dir] + ": " + conv_mode_name(*p.mode[dir]);
    }
  }
  return s;
}

void run(void* ctx, OpCache& c, const ConvDims& d, Dir dir, const float* a, const float* b,
         float* out) {
  Context& cx = context(ctx);
  ConvPrims& p = prims(c, cx, d);
  // What a weight gradient leaves in the scratch is for the data gradient called right after it.
  if (dir != kBackwardData) cx.scratch_key = nullptr;
  if (!p.mode[dir]) {
    p.mode[dir] = choose(cx, p, dir, a, b, out);
    c.note = describe(p);
  }
  impl(*p.mode[dir], dir, p.dims.layout)(cx, p, a, b, out);
}

void conv2d_forward(void* ctx, OpCache& c, const ConvDims& d, const float* x, const float* w,
                    float* y) {
  run(ctx, c, d, kForward, x, w, y);
}
void conv2d_backward_data(void* ctx, OpCache& c, const ConvDims& d, const float* dy, const float* w,
                          float* dx) {
  run(ctx, c, d, kBackwardData, dy, w, dx);
}
void conv2d_backward_weights(void* ctx, OpCache& c, const ConvDims& d, const float* x,
                             const float* dy, float* dw) {
  run(ctx, c, d, kBackwardWeights, x, dy, dw);
}

}  // namespace

void register_conv2d(Backend& b) {
  b.conv2d_forward = conv2d_forward;
  b.conv2d_backward_data = conv2d_backward_data;
  b.conv2d_backward_weights = conv2d_backward_weights;
}

}  // namespace tb::cpu
