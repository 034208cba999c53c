// The convolution modes that are matrix products (conv2d.cpp says when each runs): unfold (a
// map no larger than the kernel: a dense layer through unfolded weights), im2col (the patches of
// all images as the rows of one matrix; under NHWC whole pixels, and a 1x1 stride-1 convolution
// is one matmul on x and y in place) and channels (a 1x1 kernel as one matmul over channel-major
// copies). Each direction rearranges what it must into the context's scratch and runs a oneDNN
// matmul made on first use; under bf16 the matmul reads bf16 copies of its two operands.
#include <cstring>

#include "backends/cpu/conv2d_forms.h"

namespace tb::cpu::conv {

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

// wu[(k, o), (c, i)] = W[k, c, tap(o, i)], zero where output position o does not see input i;
// in fp32 or (T = uint16_t) bf16.
template <typename T>
void unfold_weights(const ConvPrims& p, const T* w, T* wu) {
  const ConvDims& d = p.dims;
  const int64_t map_in = d.h * d.w, map_out = d.oh() * d.ow(), rs = d.r * d.s;
  const int64_t cols = d.c * map_in;
  const UnfoldSteps u = unfold_steps(d);
  const int32_t* tap_of = p.tap_of.data();
#pragma omp parallel for schedule(static) if (d.k * d.c * map_in * map_out >= (1 << 16))
  for (int64_t k = 0; k < d.k; ++k)
    for (int64_t o = 0; o < map_out; ++o) {
      T* row = wu + (k * u.k_step + o * u.o_step) * cols;
      const int32_t* taps = tap_of + o * map_in;
      const T* wk = w + k * d.c * rs;
      if (d.layout == Layout::nhwc) {  // position-major columns: each position's run of channels
        for (int64_t i = 0; i < map_in; ++i) {
          T* out = row + i * d.c;
          if (taps[i] < 0) {
            std::memset(out, 0, size_t(d.c) * sizeof(T));
            continue;
          }
          const T* in = wk + taps[i];
          for (int64_t c = 0; c < d.c; ++c) out[c] = in[c * rs];
        }
        continue;
      }
      for (int64_t c = 0; c < d.c; ++c)
        for (int64_t i = 0; i < map_in; ++i)
          row[c * u.c_step + i * u.i_step] = taps[i] < 0 ? T(0) : wk[c * rs + taps[i]];
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

// c = a x b on one of the node's matmuls, made on first use; a and b are what the matmul reads
// (in_operand()), c is written as c_md says (fp32, or y in bf16: y_rows()).
void run_matmul_on(Context& cx, dnnl::matmul& mm, const dnnl::memory::desc& a_md, const void* a,
                   const dnnl::memory::desc& b_md, const void* b, const dnnl::memory::desc& c_md,
                   void* c) {
  const dt op = cx.operand_type();
  const dnnl::memory::desc a_op = as_type(a_md, op), b_op = as_type(b_md, op);
  if (!mm) mm = dnnl::matmul({{a_op, b_op, c_md}, cx.engine});
  mm.execute(cx.stream, {{DNNL_ARG_SRC, mem(cx, a_op, a)},
                         {DNNL_ARG_WEIGHTS, mem(cx, b_op, b)},
                         {DNNL_ARG_DST, mem(cx, c_md, c)}});
}
// What a matmul reads for the fp32 matrix src of descriptor md: src itself, or under bf16 its
// bf16 copy (an element-wise conversion of the whole buffer, the layout unchanged) in slot.
const void* in_operand(Context& cx, int slot, const dnnl::memory::desc& md, const float* src) {
  return cx.operand(slot, src, md.get_size() / sizeof(float));
}
// in_operand(), or the copy of src that the call before left in slot for key (leave_bf16).
const void* left_operand(Context& cx, int slot, const void* key, const dnnl::memory::desc& md,
                         const float* src) {
  if (const uint16_t* left = cx.left_bf16(slot, key, src)) return left;
  return in_operand(cx, slot, md, src);
}
// What a matmul reads for dy: dy itself where it holds bf16 already (ConvDims::dy_bf16: the
// batch norm after the convolution wrote it so), else in_operand(); the data gradient's, else
// left_operand().
const void* dy_operand(Context& cx, const ConvPrims& p, const dnnl::memory::desc& md,
                       const float* dy) {
  return p.dims.dy_bf16 ? static_cast<const void*>(dy) : in_operand(cx, 0, md, dy);
}
const void* dy_left_operand(Context& cx, const ConvPrims& p, const void* key,
                            const dnnl::memory::desc& md, const float* dy) {
  return p.dims.dy_bf16 ? static_cast<const void*>(dy) : left_operand(cx, 0, key, md, dy);
}
void run_matmul(Context& cx, dnnl::matmul& mm, const dnnl::memory::desc& a_md, const float* a,
                const dnnl::memory::desc& b_md, const float* b, const dnnl::memory::desc& c_md,
                float* c) {
  run_matmul_on(cx, mm, a_md, in_operand(cx, 0, a_md, a), b_md, in_operand(cx, 1, b_md, b), c_md,
                c);
}

// Under bf16 with reuse (Context::keeps_bf16): the forward keeps its copy of the x-side matrix
// (x, or the patches made from x) for the node's weight gradient, which then neither converts
// nor rebuilds it. Returns what the forward's matmul reads. (An x in bf16 already is read as it
// is: x_operand.)
const void* x_side_for_forward(Context& cx, MatmulForm& f, const float* x, const float* cols) {
  if (!cx.keeps_bf16()) return in_operand(cx, 0, f.x, cols);
  const size_t count = f.x.get_size() / sizeof(float);
  auto* copy = static_cast<uint16_t*>(f.x_kept.make(count * sizeof(uint16_t)));
  convert_to_bf16(cols, copy, int64_t(count));
  f.x_kept.of = x;
  return copy;
}

// What a matmul reads for x where x itself is the x-side matrix (unfold; im2col of a 1x1
// stride-1 convolution under NHWC): x as it is where it holds bf16 (ConvDims::x_bf16), else the
// forward's kept copy or in_operand().
const void* x_operand(Context& cx, ConvPrims& p, MatmulForm& f, Dir dir, const float* x) {
  if (p.dims.x_bf16) return x;
  if (dir == kForward) return x_side_for_forward(cx, f, x, x);
  if (const void* kept = f.x_kept.take(x)) return kept;
  return in_operand(cx, 1, f.x, x);
}
// The matrix y as the matmul writes it: fp32, or bf16 under ConvDims::y_bf16.
dnnl::memory::desc y_rows(const ConvPrims& p, const MatmulForm& f) {
  return p.dims.y_bf16 ? as_type(f.y, dt::bf16) : f.y;
}

// The scratch of a matmul-form call: the x side, then the y side (im2col: patches, y rows).
struct Scratch {
  float *x, *y;
};
Scratch scratch(Context& cx, const MatmulForm& f) {
  float* s = cx.scratch(f.scratch_floats);
  return {s, s + f.x.get_size() / sizeof(float)};
}

// W as a matmul form reads it (unfolded; under NHWC im2col, tap-major), in the operand type.
// The forward makes it and leaves it to the data gradient of the same step (W is not written in
// between); a data gradient that finds none makes its own. Under bf16 it is arranged from the
// weights' bf16 copy (the mirror's, normally), not converted after.
template <void (*Arrange16)(const ConvPrims&, const uint16_t*, uint16_t*),
          void (*Arrange32)(const ConvPrims&, const float*, float*)>
const void* arranged_weights(Context& cx, ConvPrims& p, Dir dir, const float* w) {
  MatmulForm& f = p.rows;
  if (dir == kBackwardData)
    if (const void* kept = f.w_kept.take(w)) return kept;
  const ConvDims& d = p.dims;
  const size_t count = f.w.get_size() / sizeof(float);
  void* arranged;
  if (cx.bf16()) {
    const auto* w16 = static_cast<const uint16_t*>(cx.operand(1, w, size_t(d.k * d.c * d.r * d.s)));
    arranged = f.w_kept.make(count * sizeof(uint16_t));
    Arrange16(p, w16, static_cast<uint16_t*>(arranged));
  } else {
    arranged = f.w_kept.make(count * sizeof(float));
    Arrange32(p, w, static_cast<float*>(arranged));
  }
  f.w_kept.of = dir == kForward ? w : nullptr;
  return arranged;
}
const void* unfolded_weights(Context& cx, ConvPrims& p, Dir dir, const float* w) {
  return arranged_weights<unfold_weights<uint16_t>, unfold_weights<float>>(cx, p, dir, w);
}

// y_mat = x_mat · w_mat^T
void unfold_forward(Context& cx, ConvPrims& p, const float* x, const float* w, float* y) {
  MatmulForm& f = p.rows;
  const void* wu = unfolded_weights(cx, p, kForward, w);
  run_matmul_on(cx, f.mm[kForward], f.x, x_operand(cx, p, f, kForward, x), f.w_t, wu, y_rows(p, f),
                y);
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
  run_matmul_on(cx, f.mm[kForward], f.x, x_side_for_forward(cx, f, x, cols), f.w_t,
                in_operand(cx, 1, f.w_t, w), f.y, rows);
  if (rows != y) transpose_each(d.n, d.oh() * d.ow(), d.k, rows, y);
}

// dx_mat = dy_mat · w_mat
void unfold_backward_data(Context& cx, ConvPrims& p, const float* dy, const float* w, float* dx) {
  MatmulForm& f = p.rows;
  const void* wu = unfolded_weights(cx, p, kBackwardData, w);
  run_matmul_on(cx, f.mm[kBackwardData], f.y, dy_left_operand(cx, p, &f, f.y, dy), f.w, wu, f.x,
                dx);
}
void im2col_backward_data(Context& cx, ConvPrims& p, const float* dy, const float* w, float* dx) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.rows;
  // As in channels mode: the weight gradient, just before, may have left dy's rows here.
  const bool have_dy = cx.scratch_left.is(&f, dy);
  const Scratch s = scratch(cx, f);
  const float* rows = dy;
  if (!y_is_rows(d)) {
    if (!have_dy) transpose_each(d.n, d.k, d.oh() * d.ow(), dy, s.y);
    rows = s.y;
  }
  float* cols = x_is_patches(d) ? dx : s.x;
  run_matmul_on(cx, f.mm[kBackwardData], f.y, left_operand(cx, 0, &f, f.y, rows), f.w,
                in_operand(cx, 1, f.w, w), f.x, cols);
  if (cols != dx) col2im(d, cols, dx);
}

// dw_mat = dy_mat^T · x_mat
void unfold_backward_weights(Context& cx, ConvPrims& p, const float* x, const float* dy,
                             float* dw) {
  MatmulForm& f = p.rows;
  const void* xs = x_operand(cx, p, f, kBackwardWeights, x);
  float* dwu = cx.scratch(f.scratch_floats);
  run_matmul_on(cx, f.mm[kBackwardWeights], f.y_t, dy_operand(cx, p, f.y_t, dy), f.x, xs, f.w, dwu);
  if (!p.dims.dy_bf16) cx.leave_bf16(0, &f, dy);  // for the data gradient, next
  fold_weight_grad(p, dwu, dw);
}
void im2col_backward_weights(Context& cx, ConvPrims& p, const float* x, const float* dy,
                             float* dw) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.rows;
  const Scratch s = scratch(cx, f);
  const void* xs = f.x_kept.take(x);
  if (!xs) xs = in_operand(cx, 1, f.x, x_is_patches(d) ? x : (im2col(d, x, s.x), s.x));
  const float* rows = y_is_rows(d) ? dy : (transpose_each(d.n, d.k, d.oh() * d.ow(), dy, s.y), s.y);
  run_matmul_on(cx, f.mm[kBackwardWeights], f.y_t, in_operand(cx, 0, f.y_t, rows), f.x, xs, f.w,
                dw);
  if (rows == s.y) cx.scratch_left = {&f, dy};
  cx.leave_bf16(0, &f, rows);  // for the data gradient, next
}

// ---- im2col under NHWC: patches are whole pixels, y is the rows ----------------------------

// xcol[(n, oy, ox), (ty, tx, c)] = x[n, oy*stride - pad + ty, ox*stride - pad + tx, c], zero in
// the padding: one copy of c elements (of `elem` bytes: fp32, or bf16 under x_bf16) per tap.
void im2col_nhwc(const ConvDims& d, const void* x, void* xcol, size_t elem) {
  const int64_t oh = d.oh(), ow = d.ow(), cols = d.r * d.s * d.c;
  const size_t pixel = size_t(d.c) * elem;
  const auto* in = static_cast<const char*>(x);
#pragma omp parallel for schedule(static) if (d.n * oh * ow * cols >= (1 << 16))
  for (int64_t row = 0; row < d.n * oh * ow; ++row) {
    const int64_t n = row / (oh * ow), oy = row / ow % oh, ox = row % ow;
    char* out = static_cast<char*>(xcol) + size_t(row * cols) * elem;
    for (int64_t ty = 0; ty < d.r; ++ty)
      for (int64_t tx = 0; tx < d.s; ++tx, out += pixel) {
        const int64_t iy = oy * d.stride - d.pad + ty, ix = ox * d.stride - d.pad + tx;
        if (iy >= 0 && iy < d.h && ix >= 0 && ix < d.w)
          std::memcpy(out, in + size_t((n * d.h + iy) * d.w + ix) * pixel, pixel);
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
template <typename T>
void weights_to_tap_major(const ConvPrims& p, const T* w, T* wt) {
  const ConvDims& d = p.dims;
  const int64_t rs = d.r * d.s;
#pragma omp parallel for schedule(static) if (d.k * d.c * rs >= (1 << 16))
  for (int64_t k = 0; k < d.k; ++k)
    for (int64_t c = 0; c < d.c; ++c)
      for (int64_t t = 0; t < rs; ++t) wt[(k * rs + t) * d.c + c] = w[(k * d.c + c) * rs + t];
}
// What im2col's matmuls read for W under NHWC: W itself for 1x1, else tap-major (arranged_weights).
const void* nhwc_weights(Context& cx, ConvPrims& p, Dir dir, const float* w) {
  if (p.dims.r * p.dims.s == 1) return in_operand(cx, 1, p.rows.w, w);
  return arranged_weights<weights_to_tap_major<uint16_t>, weights_to_tap_major<float>>(cx, p, dir,
                                                                                       w);
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
// What the forward and the weight gradient's matmuls read for the patches: x itself where it is
// the patches (x_operand), else patches made in fp32 into scratch and converted (the forward's
// copy kept: x_side_for_forward), or under x_bf16 made in bf16 directly (into the kept copy for
// the forward under reuse, else into scratch).
const void* nhwc_x_side(Context& cx, ConvPrims& p, Dir dir, const float* x, float* scratch) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.rows;
  if (x_is_patches_nhwc(d)) return x_operand(cx, p, f, dir, x);
  if (dir == kBackwardWeights)
    if (const void* kept = f.x_kept.take(x)) return kept;
  if (!d.x_bf16) {
    im2col_nhwc(d, x, scratch, sizeof(float));
    return dir == kForward ? x_side_for_forward(cx, f, x, scratch)
                           : in_operand(cx, 1, f.x, scratch);
  }
  const bool keep = dir == kForward && cx.keeps_bf16();
  void* patches = keep ? f.x_kept.make(f.x.get_size() / 2) : scratch;
  im2col_nhwc(d, x, patches, sizeof(uint16_t));
  if (keep) f.x_kept.of = x;
  return patches;
}

// y = patches · W^T
void im2col_nhwc_forward(Context& cx, ConvPrims& p, const float* x, const float* w, float* y) {
  MatmulForm& f = p.rows;
  const Scratch s = scratch(cx, f);  // patches, tap-major weight gradient
  run_matmul_on(cx, f.mm[kForward], f.x, nhwc_x_side(cx, p, kForward, x, s.x), f.w_t,
                nhwc_weights(cx, p, kForward, w), y_rows(p, f), y);
}
// dpatches = dy · W, folded back onto dx
void im2col_nhwc_backward_data(Context& cx, ConvPrims& p, const float* dy, const float* w,
                               float* dx) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.rows;
  const Scratch s = scratch(cx, f);  // patches, tap-major weight gradient
  const void* wt = nhwc_weights(cx, p, kBackwardData, w);
  float* cols = x_is_patches_nhwc(d) ? dx : s.x;
  run_matmul_on(cx, f.mm[kBackwardData], f.y, dy_left_operand(cx, p, &f, f.y, dy), f.w, wt, f.x,
                cols);
  if (cols != dx) col2im_nhwc(d, cols, dx);
}
// dW = dy^T · patches
void im2col_nhwc_backward_weights(Context& cx, ConvPrims& p, const float* x, const float* dy,
                                  float* dw) {
  const ConvDims& d = p.dims;
  MatmulForm& f = p.rows;
  const Scratch s = scratch(cx, f);  // patches, tap-major weight gradient
  const void* xs = nhwc_x_side(cx, p, kBackwardWeights, x, s.x);
  float* dwt = d.r * d.s == 1 ? dw : s.y;
  run_matmul_on(cx, f.mm[kBackwardWeights], f.y_t, dy_operand(cx, p, f.y_t, dy), f.x, xs, f.w, dwt);
  if (!p.dims.dy_bf16) cx.leave_bf16(0, &f, dy);  // for the data gradient, next
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
  const bool have_dy = cx.scratch_left.is(&f, dy);
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
  cx.scratch_left = {&f, dy};
}

}  // namespace tb::cpu::conv
