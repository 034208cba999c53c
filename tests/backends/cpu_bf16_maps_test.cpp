// CPU bf16 maps (Backend::bf16_maps): convolutions and batch norms that read and write their maps
// as bf16 (ConvDims::x_bf16, y_bf16; BnDims::x_bf16, y_bf16). Each op on bf16 storage against the
// same op on fp32 storage holding the same (bf16-rounded) values: the products read bf16 operands
// either way and the batch norm's sums are fp32 either way, so everything read from a bf16 map
// must give the same numbers to the bit, and everything written to one must be the fp32 result
// rounded to nearest even. (The fp32-storage ops themselves are checked against the reference on
// rounded operands in backend_ops_test.cpp.)
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "../test_util.h"
#include "backends/backend.h"
#include "backends/cpu/cpu_context.h"
#include "bf16_reference.h"
#include "core/dtype.h"
#include "core/error.h"

namespace tb {
namespace {

using testing::uniform;

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = f32_to_bf16(v[i]);
  return r;
}
std::vector<float> rounded(const std::vector<float>& v) {
  return testing::bf16_reference::rounded(v.data(), int64_t(v.size()));
}
// A bf16 buffer in a float* slot, as the executor hands one over: half the bytes, rounded up.
std::vector<float> slot_for(const std::vector<uint16_t>& v) {
  std::vector<float> s((v.size() + 1) / 2);
  std::memcpy(s.data(), v.data(), v.size() * sizeof(uint16_t));
  return s;
}
std::vector<uint16_t> halves_of(const std::vector<float>& slot, size_t count) {
  std::vector<uint16_t> h(count);
  std::memcpy(h.data(), slot.data(), count * sizeof(uint16_t));
  return h;
}
// Indices where got != want, and the first of them, for the failure message.
template <class T>
std::string differences(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size()) return "sizes differ";
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i]) bad++, first = first < 0 ? int64_t(i) : first;
  if (bad == 0) return "";
  return std::to_string(bad) + " of " + std::to_string(got.size()) + " differ, first at " +
         std::to_string(first);
}

std::unique_ptr<Backend> cpu_bf16() {
  BackendConfig cfg;
  cfg.precision = Precision::bf16;
  return make_backend(cfg);
}

ConvDims nhwc_conv(int64_t n, int64_t c, int64_t hw, int64_t k, int64_t r, int64_t stride,
                   int64_t pad) {
  ConvDims d;
  d.n = n, d.c = c, d.h = d.w = hw, d.k = k, d.r = d.s = r, d.stride = stride, d.pad = pad;
  d.layout = Layout::nhwc;
  return d;
}

// The executor's order on one node: forward, weight gradient, data gradient.
struct ConvRun {
  std::vector<float> y, dw, dx;  // y: fp32 values, or (y_bf16) bf16 values in float slots
};
ConvRun run_conv(Backend& be, const ConvDims& d, const float* x, const std::vector<float>& w,
                 const std::vector<float>& dy) {
  OpCache cache;
  ConvRun r;
  r.y.assign(size_t(d.n * d.k * d.oh() * d.ow()), 0.f);
  r.dw.assign(w.size(), 0.f);
  r.dx.assign(size_t(d.n * d.c * d.h * d.w), 0.f);
  be.conv2d_forward(be.ctx, cache, d, x, w.data(), r.y.data());
  be.conv2d_backward_weights(be.ctx, cache, d, x, dy.data(), r.dw.data());
  be.conv2d_backward_data(be.ctx, cache, d, dy.data(), w.data(), r.dx.data());
  return r;
}

// Every mode that may run each shape under NHWC bf16 (oneDNN's plain and blocked kernels, unfold,
// im2col with x used in place and with patches), with x, y or both in bf16: y is the fp32 run's
// rounded to bf16, dW and dx are the fp32 run's to the bit.
TEST(CpuBf16Maps, ConvolutionsReadAndWriteBf16) {
  if (!cpu::cpu_has_bf16_kernels()) GTEST_SKIP() << "this CPU has no bf16 instructions";
  auto be = cpu_bf16();
  ASSERT_TRUE(be->bf16_maps);
  auto& cx = cpu::context(be->ctx);
  std::set<cpu::ConvMode> seen;
  const ConvDims shapes[] = {
      nhwc_conv(6, 16, 8, 16, 3, 1, 1),  // plain, blocked
      nhwc_conv(6, 16, 8, 32, 3, 2, 1),  // plain, blocked, im2col (3x3 patches)
      nhwc_conv(6, 32, 4, 16, 1, 1, 0),  // im2col on x in place, plain
      nhwc_conv(6, 16, 4, 32, 1, 2, 0),  // im2col (strided 1x1 patches), plain
      nhwc_conv(6, 16, 2, 16, 3, 1, 1),  // unfold
      nhwc_conv(5, 24, 4, 16, 3, 2, 1),  // im2col (3x3 patches on a 2x2 output), plain
  };
  for (const ConvDims& shape : shapes) {
    const std::string name = std::to_string(shape.c) + "->" + std::to_string(shape.k) + " " +
                             std::to_string(shape.r) + "x" + std::to_string(shape.r) + " s" +
                             std::to_string(shape.stride) + " on " + std::to_string(shape.h);
    SCOPED_TRACE(name);
    const std::vector<float> x = rounded(uniform(size_t(shape.n * shape.c * shape.h * shape.w), 1));
    const std::vector<float> x16 = slot_for(to_bf16(x));
    const std::vector<float> w = uniform(size_t(shape.k * shape.c * shape.r * shape.s), 2);
    const std::vector<float> dy = uniform(size_t(shape.n * shape.k * shape.oh() * shape.ow()), 3);
    for (cpu::ConvMode m : cpu::conv2d_candidates(shape, true)) {
      SCOPED_TRACE(cpu::conv_mode_name(m));
      cx.conv_mode = m;
      seen.insert(m);
      const ConvRun want = run_conv(*be, shape, x.data(), w, dy);
      for (auto [x_bf16, y_bf16] : {std::pair{true, true}, {false, true}, {true, false}}) {
        SCOPED_TRACE(std::string("x ") + (x_bf16 ? "bf16" : "fp32") + ", y " +
                     (y_bf16 ? "bf16" : "fp32"));
        ConvDims d = shape;
        d.x_bf16 = x_bf16, d.y_bf16 = y_bf16;
        const ConvRun got = run_conv(*be, d, x_bf16 ? x16.data() : x.data(), w, dy);
        if (y_bf16)
          EXPECT_EQ(differences(halves_of(got.y, want.y.size()), to_bf16(want.y)), "");
        else
          EXPECT_EQ(differences(got.y, want.y), "");
        EXPECT_EQ(differences(got.dw, want.dw), "");
        EXPECT_EQ(differences(got.dx, want.dx), "");
      }
    }
    cx.conv_mode.reset();
  }
  for (cpu::ConvMode m :
       {cpu::ConvMode::plain, cpu::ConvMode::blocked, cpu::ConvMode::unfold, cpu::ConvMode::im2col})
    EXPECT_TRUE(seen.count(m)) << "no shape runs in mode " << cpu::conv_mode_name(m);
}

// Batch norm's forwards (train and eval; plain, + ReLU, + add + ReLU) and backwards (plain, from
// the fused ReLU's output) with x, y and dx in bf16, on maps small enough for one thread and large
// enough for the parallel loops: the statistics, running statistics and parameter gradients are
// the fp32 run's to the bit, a bf16 output is the fp32 output rounded.
TEST(CpuBf16Maps, BatchNormReadsAndWritesBf16) {
  if (!cpu::cpu_has_bf16_kernels()) GTEST_SKIP() << "this CPU has no bf16 instructions";
  auto be = cpu_bf16();
  const BnParams p{1e-5f, 0.1f};
  for (const auto& [n, c, hw] : {std::tuple{4, 16, 9}, std::tuple{32, 64, 64}}) {
    SCOPED_TRACE(std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(hw));
    BnDims base{n, c, hw, Layout::nhwc};
    const size_t count = size_t(n * c * hw);
    // Shifted and scaled away from N(0, 1), as a convolution's output is.
    const std::vector<float> x = rounded(uniform(count, 11, -0.5f, 3.f));
    const std::vector<float> x16 = slot_for(to_bf16(x));
    const std::vector<float> skip = uniform(count, 12), dy = uniform(count, 13);
    const std::vector<float> gamma = uniform(size_t(c), 14, 0.5f, 1.5f);
    const std::vector<float> beta = uniform(size_t(c), 15);
    const std::vector<float> rs_mean = uniform(size_t(c), 16),
                             rs_var = uniform(size_t(c), 17, 0.5f, 2.f);
    OpCache cache;
    enum Kind { plain, relu, add_relu };
    for (Kind k : {plain, relu, add_relu}) {
      SCOPED_TRACE(k == plain ? "bn" : k == relu ? "bn+relu" : "bn+add+relu");
      struct Out {
        std::vector<float> y, saved, running, y_eval;
      };
      auto forward = [&](const BnDims& d, const float* xp) {
        Out o;
        o.y.assign(count, 0.f), o.y_eval.assign(count, 0.f), o.saved.assign(size_t(2 * c), 0.f);
        o.running = rs_mean;
        o.running.insert(o.running.end(), rs_var.begin(), rs_var.end());
        float *sm = o.saved.data(), *rm = o.running.data();
        if (k == plain) {
          be->batchnorm_forward_train(be->ctx, cache, d, p, xp, gamma.data(), beta.data(),
                                      o.y.data(), sm, sm + c, rm, rm + c);
          be->batchnorm_forward_eval(be->ctx, cache, d, p, xp, gamma.data(), beta.data(),
                                     rs_mean.data(), rs_var.data(), o.y_eval.data());
        } else if (k == relu) {
          be->batchnorm_relu_forward_train(be->ctx, cache, d, p, xp, gamma.data(), beta.data(),
                                           o.y.data(), sm, sm + c, rm, rm + c);
          be->batchnorm_relu_forward_eval(be->ctx, cache, d, p, xp, gamma.data(), beta.data(),
                                          rs_mean.data(), rs_var.data(), o.y_eval.data());
        } else {
          be->batchnorm_add_relu_forward_train(be->ctx, cache, d, p, xp, skip.data(), gamma.data(),
                                               beta.data(), o.y.data(), sm, sm + c, rm, rm + c);
          be->batchnorm_add_relu_forward_eval(be->ctx, cache, d, p, xp, skip.data(), gamma.data(),
                                              beta.data(), rs_mean.data(), rs_var.data(),
                                              o.y_eval.data());
        }
        return o;
      };
      const Out want = forward(base, x.data());
      for (auto [x_bf16, y_bf16] : {std::pair{true, true}, {true, false}, {false, true}}) {
        if (k == add_relu && y_bf16) continue;  // the residual stream stays fp32
        SCOPED_TRACE(std::string("x ") + (x_bf16 ? "bf16" : "fp32") + ", y " +
                     (y_bf16 ? "bf16" : "fp32"));
        BnDims d = base;
        d.x_bf16 = x_bf16, d.y_bf16 = y_bf16;
        const float* xp = x_bf16 ? x16.data() : x.data();
        const Out got = forward(d, xp);
        EXPECT_EQ(differences(got.saved, want.saved), "");
        EXPECT_EQ(differences(got.running, want.running), "");
        if (y_bf16) {
          EXPECT_EQ(differences(halves_of(got.y, count), to_bf16(want.y)), "");
          EXPECT_EQ(differences(halves_of(got.y_eval, count), to_bf16(want.y_eval)), "");
        } else {
          EXPECT_EQ(differences(got.y, want.y), "");
          EXPECT_EQ(differences(got.y_eval, want.y_eval), "");
        }
        if (k == add_relu) continue;  // its backward is the plain one's (the add's runs apart)

        // The backward from the forward's saved statistics; with the ReLU, from its output z as
        // the forward stored it (bf16 under y_bf16) against fp32 z holding the same values.
        const std::vector<float> z = y_bf16 ? rounded(want.y) : want.y;
        for (bool dx_bf16 : {false, true}) {
          SCOPED_TRACE(dx_bf16 ? "dx bf16" : "dx fp32");
          auto backward = [&](const BnDims& bd, const float* xb, const float* zb) {
            std::vector<float> dx(count, 0.f), dg(size_t(2 * c), 0.f);
            const float* sm = want.saved.data();
            if (k == plain)
              be->batchnorm_backward(be->ctx, cache, bd, xb, dy.data(), gamma.data(), sm, sm + c,
                                     dx.data(), dg.data(), dg.data() + c);
            else
              be->batchnorm_relu_backward(be->ctx, cache, bd, xb, zb, dy.data(), gamma.data(), sm,
                                          sm + c, dx.data(), dg.data(), dg.data() + c);
            dx.insert(dx.end(), dg.begin(), dg.end());
            return dx;
          };
          BnDims bd32 = base;
          bd32.dx_bf16 = dx_bf16;
          BnDims bd = d;
          bd.dx_bf16 = dx_bf16;
          const std::vector<float> want_b = backward(bd32, x.data(), z.data());
          const std::vector<float> got_b = backward(bd, xp, got.y.data());
          EXPECT_EQ(differences(got_b, want_b), "");
        }
      }
    }
  }
}

// Outside NHWC the flags are refused in one line (the plan never sets them there).
TEST(CpuBf16Maps, RefusedUnderNchw) {
  if (!cpu::cpu_has_bf16_kernels()) GTEST_SKIP() << "this CPU has no bf16 instructions";
  auto be = cpu_bf16();
  OpCache cache;
  BnDims d{2, 4, 4, Layout::nchw};
  d.x_bf16 = true;
  std::vector<float> v(64), s(8), r(8, 1.f);
  EXPECT_THROW(be->batchnorm_forward_train(be->ctx, cache, d, {}, v.data(), r.data(), s.data(),
                                           v.data(), s.data(), s.data(), r.data(), r.data()),
               Error);
  ConvDims c = nhwc_conv(1, 4, 4, 4, 1, 1, 0);
  c.layout = Layout::nchw, c.y_bf16 = true;
  EXPECT_THROW(be->conv2d_forward(be->ctx, cache, c, v.data(), v.data(), v.data()), Error);
}

}  // namespace
}  // namespace tb
