// The convolution's internal pieces shared by conv2d.cpp (the choice of mode, oneDNN's own
// primitives) and conv2d_forms.cpp (the modes that are matrix products: unfold, im2col and
// channels). Not part of the backend's interface: cpu_context.h is.
#pragma once
#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "backends/cpu/cpu_context.h"

namespace tb::cpu::conv {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// One tensor argument of a primitive: the caller's plain memory (re-pointed every call) and,
// when the primitive wants another layout, its own buffer and the reorder between the two.
struct Port {
  dnnl::memory user, inner;
  dnnl::reorder reorder;
  bool needs_reorder = false;
  // The caller's pointer whose conversion `inner` holds for a later direction (hold, take_input
  // in conv2d.cpp), or null.
  const void* held = nullptr;

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

// A node's own copy of an operand as a matmul reads it (in the operand type), made by one
// direction and read by a later one of the same step: backend.h promises that a node's inputs
// are not written between its directions. `of` is the operand it was made from until the reader
// takes it; a reader that finds another operand (or none) makes its own.
struct Kept {
  std::vector<uint64_t> words;  // room for fp32 or bf16 values, 8-byte aligned
  const float* of = nullptr;
  void* make(size_t bytes) {
    if (words.size() * 8 < bytes) words.resize((bytes + 7) / 8);
    return words.data();
  }
  // The copy, if it was made from src; let go of either way.
  const void* take(const float* src) {
    const void* copy = of && of == src ? words.data() : nullptr;
    of = nullptr;
    return copy;
  }
};

// One matrix-product form of the convolution: its three matmuls (made on first use) and the
// row-major matrices they read; "_t" descriptors read one transposed.
struct MatmulForm {
  dnnl::matmul mm[3];  // by Dir
  dnnl::memory::desc x, y, w, w_t, y_t, x_t;
  size_t scratch_floats = 0;
  // unfold: the unfolded weights, from the forward to the data gradient. Under bf16 with
  // BackendConfig::reuse_bf16, the x-side matrix (x, or its patches) from the forward to the
  // weight gradient.
  Kept w_kept, x_kept;
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
  // (read: x, W, dy) in the operand type, an output (written: dx, dW) in fp32, y as the caller
  // stores it (fp32, or bf16 under ConvDims::y_bf16).
  dnnl::memory::desc in(const dnnl::memory::desc& plain) const { return conv_md(plain, operand); }
  dnnl::memory::desc out(const dnnl::memory::desc& plain) const { return conv_md(plain, dt::f32); }
  dnnl::memory::desc y_out(const dnnl::memory::desc& y) const { return conv_md(y, y.data_type()); }
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
  std::optional<ConvMode> mode[3];  // by Dir, once chosen
  // In the caller's layout and type: x, y and dy in bf16 under ConvDims::x_bf16, y_bf16, dy_bf16
  // (else fp32), dx and W in fp32.
  dnnl::memory::desc x_md, dx_md, w_md, y_md, dy_md;
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

inline bool has(const std::vector<ConvMode>& c, ConvMode m) {
  return std::find(c.begin(), c.end(), m) != c.end();
}
inline dnnl::memory mem(const Context& cx, const dnnl::memory::desc& md, const void* ptr) {
  return dnnl::memory(md, cx.engine, const_cast<void*>(ptr));
}

// conv2d_forms.cpp: the matrices of the matmul modes that p's candidates hold (made with p), and
// each mode's three directions as out = f(a, b): forward (x, W) -> y, backward data (dy, W) ->
// dx, backward weights (x, dy) -> dW.
void init_rows(ConvPrims* p);      // unfold and im2col
void init_channels(ConvPrims* p);  // channels
#define TB_CONV_FORM(name)                                                                  \
  void name##_forward(Context& cx, ConvPrims& p, const float* x, const float* w, float* y); \
  void name##_backward_data(Context& cx, ConvPrims& p, const float* dy, const float* w,     \
                            float* dx);                                                     \
  void name##_backward_weights(Context& cx, ConvPrims& p, const float* x, const float* dy,  \
                               float* dw);
TB_CONV_FORM(unfold)
TB_CONV_FORM(im2col)
TB_CONV_FORM(im2col_nhwc)
TB_CONV_FORM(channels)
#undef TB_CONV_FORM

}  // namespace tb::cpu::conv
