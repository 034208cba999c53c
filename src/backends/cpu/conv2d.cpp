// Convolution on oneDNN. Shapes (NCHW, weights OIHW): x [n, c, h, w], W [k, c, r, s],
// y [n, k, oh, ow]; square stride and padding, no bias (BN follows every ResNet convolution).
// Under NHWC (ConvDims::layout) x and y are [n, h, w, c] and [n, oh, ow, k], W stays OIHW.
//   forward          y  = conv(x, W)
//   backward data    dx = conv^T(dy, W)
//   backward weights dW = corr(x, dy)
// The caller's tensors are in its layout (NCHW or NHWC; OIHW weights) in and out, whatever runs
// inside; the matmul modes live in conv2d_forms.cpp. Each direction of
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
// convert their two operands as they hand them over (run_matmul). With reuse_bf16 a conversion
// serves every direction of the step that reads it (hold/take_input here, Kept in the forms):
// x is converted once, dy once, W by the forward only.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/cpu/conv2d_forms.h"
#include "core/error.h"

namespace tb::cpu {

using namespace conv;

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
    if (d.stride > 1) return {ConvMode::plain, ConvMode::blocked, ConvMode::im2col};
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

ConvPrims* make_prims(const Context& cx, const ConvDims& d) {
  auto p = std::make_unique<ConvPrims>();  // freed if a check or oneDNN throws below
  p->dims = d;
  p->cands = conv2d_candidates(d, cx.bf16());
  const dnnl::memory::dims xd = {d.n, d.c, d.h, d.w}, wd = {d.k, d.c, d.r, d.s},
                           yd = {d.n, d.k, d.oh(), d.ow()};
  const tag act = d.layout == Layout::nhwc ? tag::nhwc : tag::nchw;
  TB_CHECK(!(d.dy_bf16 || d.x_bf16 || d.y_bf16) || (d.layout == Layout::nhwc && cx.bf16()),
           "conv2d: bf16 maps and gradients are read and written under NHWC and bf16 only");
  auto stored = [&](bool bf16) { return bf16 ? dt::bf16 : dt::f32; };
  p->x_md = {xd, stored(d.x_bf16), act};
  p->dx_md = {xd, dt::f32, act};
  p->w_md = {wd, dt::f32, tag::oihw};
  p->y_md = {yd, stored(d.y_bf16), act};
  p->dy_md = {yd, stored(d.dy_bf16), act};
  if (has(p->cands, ConvMode::unfold) || has(p->cands, ConvMode::im2col)) init_rows(p.get());
  if (has(p->cands, ConvMode::channels)) init_channels(p.get());
  p->strides = {d.stride, d.stride};
  p->pad = {d.pad, d.pad};  // symmetric, as PyTorch: oh() floors, the right edge may fall short
  for (bool blocked : {false, true}) {
    if (!has(p->cands, blocked ? ConvMode::blocked : ConvMode::plain)) continue;
    ConvPrimitives& c = p->conv[blocked];
    c.blocked = blocked, c.operand = cx.operand_type();
    c.any_weights = d.layout == Layout::nhwc;
    dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, c.in(p->x_md),
        c.w_in(p->w_md), c.y_out(p->y_md), p->strides, p->pad, p->pad);
    c.fwd_pd = dnnl::convolution_forward::primitive_desc(desc, cx.engine);
  }
  return p.release();
}

ConvPrims& prims(OpCache& c, const Context& cx, const ConvDims& d) {
  auto* p = c.get<ConvPrims>();
  if (!p || !(p->dims == d)) {
    if (c.destroy) c.destroy(c.impl), c.impl = nullptr, c.destroy = nullptr;
    p = c.set(make_prims(cx, d));
  }
  return *p;
}

// ---- plain and blocked: oneDNN convolution primitives ----------------------------------------

// Under BackendConfig::reuse_bf16 a conversion one direction made serves a later one of the same
// step that wants the same layout (backend.h: nothing writes a node's inputs between its
// directions): x from the forward to the weight gradient, W from the forward to the data
// gradient, dy from the weight gradient to the data gradient. hold() marks what a port
// converted; take_input() reads it through another port, or converts anew.
void hold(const Context& cx, Port& port, const void* p) {
  port.held = cx.reuse_bf16 && port.needs_reorder ? p : nullptr;
}
// The memory the primitive reads for input p through port `to`: the copy `from` holds of p where
// it has to's layout (from lets go of it either way), else to's own conversion.
const dnnl::memory& take_input(Context& cx, Port& to, const void* p, Port& from) {
  const bool same =
      from.held == p && to.needs_reorder && from.inner.get_desc() == to.inner.get_desc();
  from.held = nullptr;
  if (same) return from.inner;
  const dnnl::memory& m = to.bind(p);
  to.in(cx.stream);
  return m;
}

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
  hold(cx, c.f_x, x), hold(cx, c.f_w, w);
  c.fwd.execute(cx.stream, {{DNNL_ARG_SRC, mx}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, my}});
  c.f_y.out(cx.stream);
}

template <bool kBlocked>
void conv_backward_data(Context& cx, ConvPrims& p, const float* dy, const float* w, float* dx) {
  ConvPrimitives& c = p.conv[kBlocked];
  if (!c.bwd_data) {
    dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, c.out(p.dx_md),
                                               c.w_in(p.w_md), c.in(p.y_md), p.strides, p.pad,
                                               p.pad);
    dnnl::convolution_backward_data::primitive_desc pd(desc, cx.engine, c.fwd_pd);
    c.bwd_data = dnnl::convolution_backward_data(pd);
    c.d_dy.init(cx, p.dy_md, pd.diff_dst_desc(), true);
    c.d_w.init(cx, p.w_md, pd.weights_desc(), true);
    c.d_dx.init(cx, p.dx_md, pd.diff_src_desc(), false);
  }
  const auto& mdy = take_input(cx, c.d_dy, dy, c.w_dy);
  const auto& mw = take_input(cx, c.d_w, w, c.f_w);
  const auto& mdx = c.d_dx.bind(dx);
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
    c.w_dy.init(cx, p.dy_md, pd.diff_dst_desc(), true);
    c.w_dw.init(cx, p.w_md, pd.diff_weights_desc(), false);
  }
  const auto& mx = take_input(cx, c.w_x, x, c.f_x);
  const auto& mdy = c.w_dy.bind(dy);
  const auto& mdw = c.w_dw.bind(dw);
  c.w_dy.in(cx.stream);
  hold(cx, c.w_dy, dy);
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
  if (dir != kBackwardData) cx.scratch_left = cx.bf16_left[0] = cx.bf16_left[1] = {};
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
