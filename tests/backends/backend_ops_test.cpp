// Every built and usable backend against the reference, op by op, from ONE table (ggml's
// test-backend-ops). A table entry names the op and shape, its buffers (inputs, in-outs,
// outputs), its tolerance and FLOPs, and a lambda that calls the backend table; the harness does
// the rest:
//   - random inputs from a seed derived from the case name (identical for every backend), never
//     all zeros; integer inputs (labels, indices) drawn in their valid range;
//   - outputs poisoned before each run (NaN, or an impossible int32), so an element a backend
//     forgets to write fails; inputs downloaded afterwards must be unchanged;
//   - on each tested backend the case runs twice on one OpCache: the first call builds the
//     primitives (aligned pointers), the second reuses them with every pointer moved 4 bytes
//     (the trainer's parameters sit at unaligned offsets of one packed array); both checked;
//   - float outputs compared by relative norm error ||got - want|| / ||want|| <= tol, int32
//     outputs (argmax, labels) exactly. Each case prints the worst error it saw.
// Adding an op case = one line in op_table(). The same table feeds the perf mode at the end
// (BackendOpsPerf, disabled by default: --gtest_also_run_disabled_tests), which prints ms and
// GFLOP/s per case on each backend at the ResNet-50/CIFAR shapes and batch 128.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "../test_util.h"
#include "backends/backend.h"
#include "backends/cpu/cpu_context.h"
#include "bf16_reference.h"
#include "core/error.h"

namespace tb {
namespace {

// Tolerances (fp32), each the tightest that holds with a margin for another ISA or thread
// count; the worst error each case measured on the oneDNN backend (AVX2, 2 threads) is printed.
// Same IEEE operation per element on every backend (max and its argmax, +, a compare): results
// must be identical. relu, add, maxpool measure exactly 0.
constexpr double kTolExact = 0;
// Per-element arithmetic whose order may differ from the reference by an ulp or two (a*x + b
// against (x - m) * s, fused multiply-adds, float against double for one division): measured
// <= 1.2e-7 (gather_batch's normalisation), so 1e-6 is 8x that and still catches any real slip.
constexpr double kTolElementwise = 1e-6;
// Reductions (batchnorm statistics over n*hw, softmax sums, the loss): the reference sums in
// double, a backend in float lanes and per-thread partials. Measured <= 7.5e-7, the worst on a
// 1x1 map at batch 2 (two values per channel: the variance is ill-conditioned); 1e-5 leaves room
// for long reductions (ResNet's stem: 32768 values per channel at batch 128).
constexpr double kTolReduce = 1e-5;
// GEMM and convolution: float accumulation over K = c*r*s (up to 4608 here) in a blocked order
// against the reference's double sums; a random walk gives ~sqrt(K) * 2^-24 = 4e-6 at K = 4608.
// oneDNN measured <= 8.1e-7 (direct 3x3 kernels, im2col gemm and matmul alike: no Winograd,
// which is never selected since the convolutions ask for convolution_direct). 1e-6 would pass
// here but leave no room for AVX-512 blocking or another thread split; 1e-5 does, and matches
// the CUDA test's fp32 bound.
constexpr double kTolGemm = 1e-5;
// The same GEMM and convolution cases on a bf16 backend (the CPU's --precision bf16): operands
// rounded to 8 significant bits, products accumulated in fp32. Against the reference on the
// operands as they are, rounding both operands of random products gives a relative norm error of
// ~2e-3 whatever K is (measured 1.3e-3 to 2.6e-3); kTolBf16 leaves 4x. The error must also be at
// least kMinErrBf16: a backend that computed these in fp32 (~1e-6) would carry a false label.
// Against the reference fed the same rounded operands (bf16_reference.h) only the accumulation
// order differs, so that comparison is held to kTolGemm: it catches what rounding would hide.
constexpr double kTolBf16 = 1e-2;
constexpr double kMinErrBf16 = 1e-4;

const float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int32_t kPoisonI32 = std::numeric_limits<int32_t>::min() + 7;

// ---------------------------------------------------------------------------------------------
// Table entries

enum class Role : uint8_t { in, inout, out };
enum class Type : uint8_t { f32, i32, u8 };

struct BufSpec {
  std::string name;
  Role role;
  Type type;
  int64_t count;
  double lo = -1, hi = 1;  // random initial values; integer types draw integers in [lo, hi]
  // An activation [n, act_c, act_hw] (NCHW as stored; act_hw 0: not one); index_hw > 0: its
  // int32 values are flat indices into an activation [n, act_c, index_hw] (max-pool's argmax).
  // A case run under NHWC gets these transposed on the way in and back on the way out
  // (relayout()), so that it compares in NCHW. mark() sets them.
  int64_t act_c = 0, act_hw = 0, index_hw = 0;
  size_t bytes() const { return size_t(count) * (type == Type::u8 ? 1 : 4); }
};

// Device pointers of a case's buffers, by name.
struct Args {
  const std::vector<BufSpec>* specs = nullptr;
  std::vector<void*> ptr;
  void* get(const std::string& name) const {
    for (size_t i = 0; i < specs->size(); ++i)
      if ((*specs)[i].name == name) return ptr[i];
    throw std::logic_error("test case has no buffer named " + name);
  }
  float* f(const std::string& n) const { return static_cast<float*>(get(n)); }
  int32_t* i(const std::string& n) const { return static_cast<int32_t*>(get(n)); }
  uint8_t* u(const std::string& n) const { return static_cast<uint8_t*>(get(n)); }
};

using RunFn = std::function<void(Backend&, OpCache&, const Args&)>;

struct OpCase {
  std::string name;  // op_shape, gtest-safe
  double tol;        // relative norm error allowed on float outputs
  double flops;      // per run, for the perf mode
  std::vector<BufSpec> bufs;
  RunFn run;
  double bytes() const {  // moved per run: inputs read, outputs written, in-outs both
    double b = 0;
    for (const auto& s : bufs) b += double(s.bytes()) * (s.role == Role::inout ? 2 : 1);
    return b;
  }
};
void PrintTo(const OpCase& c, std::ostream* os) {
  *os << c.name;
}

BufSpec in(std::string n, int64_t count, double lo = -1, double hi = 1) {
  return {std::move(n), Role::in, Type::f32, count, lo, hi};
}
BufSpec inout(std::string n, int64_t count, double lo = -1, double hi = 1) {
  return {std::move(n), Role::inout, Type::f32, count, lo, hi};
}
BufSpec out(std::string n, int64_t count) {
  return {std::move(n), Role::out, Type::f32, count};
}
BufSpec in_i32(std::string n, int64_t count, int64_t lo, int64_t hi) {
  return {std::move(n), Role::in, Type::i32, count, double(lo), double(hi)};
}
BufSpec in_u8(std::string n, int64_t count, int64_t lo = 0, int64_t hi = 255) {
  return {std::move(n), Role::in, Type::u8, count, double(lo), double(hi)};
}
BufSpec out_i32(std::string n, int64_t count) {
  return {std::move(n), Role::out, Type::i32, count};
}

// Marks the named buffers of c (those it has) as activations [n, ch, hw] (BufSpec::act_hw).
void mark(OpCase& c, std::initializer_list<const char*> names, int64_t ch, int64_t hw,
          int64_t index_hw = 0) {
  for (BufSpec& s : c.bufs)
    for (const char* n : names)
      if (s.name == n) s.act_c = ch, s.act_hw = hw, s.index_hw = index_hw;
}

// ---------------------------------------------------------------------------------------------
// Case builders: one per op direction. Shapes are the arguments; the table below lists them.

std::string conv_tag(const ConvDims& d) {
  return "k" + std::to_string(d.r) + "s" + std::to_string(d.stride) + "p" + std::to_string(d.pad) +
         "_c" + std::to_string(d.c) + "k" + std::to_string(d.k) + "_" + std::to_string(d.h) + "x" +
         std::to_string(d.w) + "_n" + std::to_string(d.n);
}
ConvDims conv(int64_t n, int64_t c, int64_t hw, int64_t k, int64_t kernel, int64_t stride,
              int64_t pad) {
  ConvDims d;
  d.n = n, d.c = c, d.h = d.w = hw, d.k = k, d.r = d.s = kernel, d.stride = stride, d.pad = pad;
  return d;
}
int64_t x_count(const ConvDims& d) {
  return d.n * d.c * d.h * d.w;
}
int64_t w_count(const ConvDims& d) {
  return d.k * d.c * d.r * d.s;
}
int64_t y_count(const ConvDims& d) {
  return d.n * d.k * d.oh() * d.ow();
}

OpCase conv_fwd(const ConvDims& d) {
  return {"conv2d_fwd_" + conv_tag(d),
          kTolGemm,
          d.flops_forward(),
          {in("x", x_count(d)), in("w", w_count(d), -0.3, 0.3), out("y", y_count(d))},
          [d](Backend& b, OpCache& c, const Args& a) {
            b.conv2d_forward(b.ctx, c, d, a.f("x"), a.f("w"), a.f("y"));
          }};
}
OpCase conv_bwd_data(const ConvDims& d) {
  return {"conv2d_bwd_data_" + conv_tag(d),
          kTolGemm,
          d.flops_forward(),
          {in("dy", y_count(d)), in("w", w_count(d), -0.3, 0.3), out("dx", x_count(d))},
          [d](Backend& b, OpCache& c, const Args& a) {
            b.conv2d_backward_data(b.ctx, c, d, a.f("dy"), a.f("w"), a.f("dx"));
          }};
}
OpCase conv_bwd_weights(const ConvDims& d) {
  return {"conv2d_bwd_weights_" + conv_tag(d),
          kTolGemm,
          d.flops_forward(),
          {in("x", x_count(d)), in("dy", y_count(d)), out("dw", w_count(d))},
          [d](Backend& b, OpCache& c, const Args& a) {
            b.conv2d_backward_weights(b.ctx, c, d, a.f("x"), a.f("dy"), a.f("dw"));
          }};
}
// The trainer's order on one node's cache: forward, then weights, then data.
OpCase conv_step(const ConvDims& d) {
  return {"conv2d_step_" + conv_tag(d),
          kTolGemm,
          3 * d.flops_forward(),
          {in("x", x_count(d)), in("w", w_count(d), -0.3, 0.3), in("dy", y_count(d)),
           out("y", y_count(d)), out("dw", w_count(d)), out("dx", x_count(d))},
          [d](Backend& b, OpCache& c, const Args& a) {
            b.conv2d_forward(b.ctx, c, d, a.f("x"), a.f("w"), a.f("y"));
            b.conv2d_backward_weights(b.ctx, c, d, a.f("x"), a.f("dy"), a.f("dw"));
            b.conv2d_backward_data(b.ctx, c, d, a.f("dy"), a.f("w"), a.f("dx"));
          }};
}

std::string dense_tag(const DenseDims& d) {
  return "n" + std::to_string(d.n) + "_in" + std::to_string(d.in) + "_out" + std::to_string(d.out);
}
OpCase dense_fwd(const DenseDims& d, bool bias, bool relu) {
  std::vector<BufSpec> bufs = {in("x", d.n * d.in), in("w", d.out * d.in, -0.2, 0.2),
                               out("y", d.n * d.out)};
  if (bias) bufs.push_back(in("b", d.out));
  return {
      "dense_fwd_" + dense_tag(d) + (bias ? "_bias" : "_nobias") + (relu ? "_relu" : ""), kTolGemm,
      d.flops_forward(), bufs, [d, bias, relu](Backend& b, OpCache& c, const Args& a) {
        b.dense_forward(b.ctx, c, d, a.f("x"), a.f("w"), bias ? a.f("b") : nullptr, a.f("y"), relu);
      }};
}
OpCase dense_bwd(const DenseDims& d, bool dx, bool db) {
  std::vector<BufSpec> bufs = {in("x", d.n * d.in), in("w", d.out * d.in, -0.2, 0.2),
                               in("dy", d.n * d.out), out("dw", d.out * d.in)};
  if (dx) bufs.push_back(out("dx", d.n * d.in));
  if (db) bufs.push_back(out("db", d.out));
  return {"dense_bwd_" + dense_tag(d) + (dx ? "_dx" : "_nodx") + (db ? "_db" : "_nodb"), kTolGemm,
          (dx ? 2 : 1) * d.flops_forward(), bufs,
          [d, dx, db](Backend& b, OpCache& c, const Args& a) {
            b.dense_backward(b.ctx, c, d, a.f("x"), a.f("w"), a.f("dy"), dx ? a.f("dx") : nullptr,
                             a.f("dw"), db ? a.f("db") : nullptr);
          }};
}

OpCase relu_fwd(int64_t n) {
  return {
      "relu_fwd_" + std::to_string(n),
      kTolExact,
      double(n),
      {in("x", n), out("y", n)},
      [n](Backend& b, OpCache&, const Args& a) { b.relu_forward(b.ctx, n, a.f("x"), a.f("y")); }};
}
OpCase relu_bwd(int64_t n) {
  return {"relu_bwd_" + std::to_string(n),
          kTolExact,
          double(n),
          {in("y", n), in("dy", n), out("dx", n)},
          [n](Backend& b, OpCache&, const Args& a) {
            b.relu_backward(b.ctx, n, a.f("y"), a.f("dy"), a.f("dx"));
          }};
}
OpCase add_op(int64_t n) {
  return {
      "add_" + std::to_string(n),
      kTolExact,
      double(n),
      {in("a", n), in("b", n), out("y", n)},
      [n](Backend& b, OpCache&, const Args& a) { b.add(b.ctx, n, a.f("a"), a.f("b"), a.f("y")); }};
}
// The trainer's gradient accumulation: add(grad, scratch, grad), y aliasing a.
OpCase add_inplace(int64_t n) {
  return {
      "add_inplace_" + std::to_string(n),
      kTolExact,
      double(n),
      {inout("a", n), in("b", n)},
      [n](Backend& b, OpCache&, const Args& a) { b.add(b.ctx, n, a.f("a"), a.f("b"), a.f("a")); }};
}

OpCase softmax_ce(int64_t n, int64_t classes, bool train) {
  std::vector<BufSpec> bufs = {in("z", n * classes, -3, 3), in_i32("labels", n, 0, classes - 1),
                               inout("metrics", 2, 1, 4)};
  if (train) bufs.push_back(out("dz", n * classes));
  return {"softmax_ce_n" + std::to_string(n) + "_k" + std::to_string(classes) +
              (train ? "_train" : "_eval"),
          kTolReduce, 5.0 * n * classes, bufs,
          [n, classes, train](Backend& b, OpCache&, const Args& a) {
            b.softmax_ce(b.ctx, n, classes, a.f("z"), a.i("labels"), train ? 1.f / float(n) : 1.f,
                         train ? a.f("dz") : nullptr, a.f("metrics"));
          }};
}

std::string bn_tag(const BnDims& d) {
  std::string t =
      "n" + std::to_string(d.n) + "_c" + std::to_string(d.c) + "_hw" + std::to_string(d.hw);
  if (d.x_bf16 || d.y_bf16 || d.dx_bf16)
    t += std::string("_bf16") + (d.x_bf16 ? "x" : "") + (d.y_bf16 ? "y" : "") +
         (d.dx_bf16 ? "dx" : "");
  return t;
}
// BN inputs sit off zero (mean ~1) so the statistics matter; running variance stays positive.
OpCase bn_train(const BnDims& d) {
  const int64_t t = d.n * d.c * d.hw;
  return {"batchnorm_train_" + bn_tag(d),
          kTolReduce,
          7.0 * t,
          {in("x", t, -1, 3), in("gamma", d.c, 0.5, 1.5), in("beta", d.c), out("y", t),
           out("mean", d.c), out("invstd", d.c), inout("rmean", d.c), inout("rvar", d.c, 0.5, 2)},
          [d](Backend& b, OpCache& c, const Args& a) {
            b.batchnorm_forward_train(b.ctx, c, d, BnParams{}, a.f("x"), a.f("gamma"), a.f("beta"),
                                      a.f("y"), a.f("mean"), a.f("invstd"), a.f("rmean"),
                                      a.f("rvar"));
          }};
}
OpCase bn_eval(const BnDims& d) {
  const int64_t t = d.n * d.c * d.hw;
  return {"batchnorm_eval_" + bn_tag(d),
          kTolElementwise,
          2.0 * t,
          {in("x", t, -1, 3), in("gamma", d.c, 0.5, 1.5), in("beta", d.c), in("rmean", d.c),
           in("rvar", d.c, 0.5, 2), out("y", t)},
          [d](Backend& b, OpCache& c, const Args& a) {
            b.batchnorm_forward_eval(b.ctx, c, d, BnParams{}, a.f("x"), a.f("gamma"), a.f("beta"),
                                     a.f("rmean"), a.f("rvar"), a.f("y"));
          }};
}
// Forward (train) then backward on one cache, as the trainer does: the backward reads the
// statistics this backend saved, and those are compared too.
OpCase bn_bwd(const BnDims& d) {
  const int64_t t = d.n * d.c * d.hw;
  return {"batchnorm_bwd_" + bn_tag(d),
          kTolReduce,
          14.0 * t,
          {in("x", t, -1, 3), in("gamma", d.c, 0.5, 1.5), in("beta", d.c), in("dy", t),
           inout("rmean", d.c), inout("rvar", d.c, 0.5, 2), out("y", t), out("mean", d.c),
           out("invstd", d.c), out("dx", t), out("dgamma", d.c), out("dbeta", d.c)},
          [d](Backend& b, OpCache& c, const Args& a) {
            b.batchnorm_forward_train(b.ctx, c, d, BnParams{}, a.f("x"), a.f("gamma"), a.f("beta"),
                                      a.f("y"), a.f("mean"), a.f("invstd"), a.f("rmean"),
                                      a.f("rvar"));
            b.batchnorm_backward(b.ctx, c, d, a.f("x"), a.f("dy"), a.f("gamma"), a.f("mean"),
                                 a.f("invstd"), a.f("dx"), a.f("dgamma"), a.f("dbeta"));
          }};
}

// BN with the ReLU after it fused, where a backend has it; elsewhere (the reference) the two ops
// one after the other, which is what the fused entries must match. Inputs centred on 0 so about
// half of the outputs are clipped and the backward's mask matters.
OpCase bn_relu_train(const BnDims& d) {
  const int64_t t = d.n * d.c * d.hw;
  return {"batchnorm_relu_train_" + bn_tag(d),
          kTolReduce,
          8.0 * t,
          {in("x", t, -2, 2), in("gamma", d.c, 0.5, 1.5), in("beta", d.c), out("z", t),
           out("mean", d.c), out("invstd", d.c), inout("rmean", d.c), inout("rvar", d.c, 0.5, 2)},
          [d](Backend& b, OpCache& c, const Args& a) {
            if (b.batchnorm_relu_forward_train) {
              b.batchnorm_relu_forward_train(b.ctx, c, d, BnParams{}, a.f("x"), a.f("gamma"),
                                             a.f("beta"), a.f("z"), a.f("mean"), a.f("invstd"),
                                             a.f("rmean"), a.f("rvar"));
              return;
            }
            b.batchnorm_forward_train(b.ctx, c, d, BnParams{}, a.f("x"), a.f("gamma"), a.f("beta"),
                                      a.f("z"), a.f("mean"), a.f("invstd"), a.f("rmean"),
                                      a.f("rvar"));
            b.relu_forward(b.ctx, d.n * d.c * d.hw, a.f("z"), a.f("z"));
          }};
}
OpCase bn_relu_eval(const BnDims& d) {
  const int64_t t = d.n * d.c * d.hw;
  return {"batchnorm_relu_eval_" + bn_tag(d),
          kTolElementwise,
          3.0 * t,
          {in("x", t, -2, 2), in("gamma", d.c, 0.5, 1.5), in("beta", d.c), in("rmean", d.c),
           in("rvar", d.c, 0.5, 2), out("z", t)},
          [d](Backend& b, OpCache& c, const Args& a) {
            if (b.batchnorm_relu_forward_eval) {
              b.batchnorm_relu_forward_eval(b.ctx, c, d, BnParams{}, a.f("x"), a.f("gamma"),
                                            a.f("beta"), a.f("rmean"), a.f("rvar"), a.f("z"));
              return;
            }
            b.batchnorm_forward_eval(b.ctx, c, d, BnParams{}, a.f("x"), a.f("gamma"), a.f("beta"),
                                     a.f("rmean"), a.f("rvar"), a.f("z"));
            b.relu_forward(b.ctx, d.n * d.c * d.hw, a.f("z"), a.f("z"));
          }};
}
// Forward then backward from dz on one cache, as the trainer does.
OpCase bn_relu_bwd(const BnDims& d) {
  const int64_t t = d.n * d.c * d.hw;
  return {
      "batchnorm_relu_bwd_" + bn_tag(d),
      kTolReduce,
      16.0 * t,
      {in("x", t, -2, 2), in("gamma", d.c, 0.5, 1.5), in("beta", d.c), in("dz", t),
       inout("rmean", d.c), inout("rvar", d.c, 0.5, 2), out("z", t), out("dy", t), out("mean", d.c),
       out("invstd", d.c), out("dx", t), out("dgamma", d.c), out("dbeta", d.c)},
      [d](Backend& b, OpCache& c, const Args& a) {
        const int64_t t = d.n * d.c * d.hw;
        if (b.batchnorm_relu_forward_train && b.batchnorm_relu_backward) {
          b.batchnorm_relu_forward_train(b.ctx, c, d, BnParams{}, a.f("x"), a.f("gamma"),
                                         a.f("beta"), a.f("z"), a.f("mean"), a.f("invstd"),
                                         a.f("rmean"), a.f("rvar"));
          b.batchnorm_relu_backward(b.ctx, c, d, a.f("x"), a.f("z"), a.f("dz"), a.f("gamma"),
                                    a.f("mean"), a.f("invstd"), a.f("dx"), a.f("dgamma"),
                                    a.f("dbeta"));
          b.fill(b.ctx, a.f("dy"), 0.f, t);  // a fused backward has no dy of its own
          return;
        }
        b.batchnorm_forward_train(b.ctx, c, d, BnParams{}, a.f("x"), a.f("gamma"), a.f("beta"),
                                  a.f("z"), a.f("mean"), a.f("invstd"), a.f("rmean"), a.f("rvar"));
        b.relu_forward(b.ctx, t, a.f("z"), a.f("z"));
        b.relu_backward(b.ctx, t, a.f("z"), a.f("dz"), a.f("dy"));
        b.batchnorm_backward(b.ctx, c, d, a.f("x"), a.f("dy"), a.f("gamma"), a.f("mean"),
                             a.f("invstd"), a.f("dx"), a.f("dgamma"), a.f("dbeta"));
        b.fill(b.ctx, a.f("dy"), 0.f, t);
      }};
}

// BN, the residual add and the ReLU in one forward (ResNet's bn3 -> add -> relu3) where a backend
// has it; elsewhere the three ops. The skip is centred on 0 too, so the sum crosses 0 often.
OpCase bn_add_relu_train(const BnDims& d) {
  const int64_t t = d.n * d.c * d.hw;
  return {"batchnorm_add_relu_train_" + bn_tag(d),
          kTolReduce,
          9.0 * t,
          {in("x", t, -2, 2), in("skip", t, -1, 1), in("gamma", d.c, 0.5, 1.5), in("beta", d.c),
           out("z", t), out("mean", d.c), out("invstd", d.c), inout("rmean", d.c),
           inout("rvar", d.c, 0.5, 2)},
          [d](Backend& b, OpCache& c, const Args& a) {
            const int64_t t = d.n * d.c * d.hw;
            if (b.batchnorm_add_relu_forward_train) {
              b.batchnorm_add_relu_forward_train(b.ctx, c, d, BnParams{}, a.f("x"), a.f("skip"),
                                                 a.f("gamma"), a.f("beta"), a.f("z"), a.f("mean"),
                                                 a.f("invstd"), a.f("rmean"), a.f("rvar"));
              return;
            }
            b.batchnorm_forward_train(b.ctx, c, d, BnParams{}, a.f("x"), a.f("gamma"), a.f("beta"),
                                      a.f("z"), a.f("mean"), a.f("invstd"), a.f("rmean"),
                                      a.f("rvar"));
            b.add(b.ctx, t, a.f("z"), a.f("skip"), a.f("z"));
            b.relu_forward(b.ctx, t, a.f("z"), a.f("z"));
          }};
}
OpCase bn_add_relu_eval(const BnDims& d) {
  const int64_t t = d.n * d.c * d.hw;
  return {"batchnorm_add_relu_eval_" + bn_tag(d),
          kTolElementwise,
          4.0 * t,
          {in("x", t, -2, 2), in("skip", t, -1, 1), in("gamma", d.c, 0.5, 1.5), in("beta", d.c),
           in("rmean", d.c), in("rvar", d.c, 0.5, 2), out("z", t)},
          [d](Backend& b, OpCache& c, const Args& a) {
            const int64_t t = d.n * d.c * d.hw;
            if (b.batchnorm_add_relu_forward_eval) {
              b.batchnorm_add_relu_forward_eval(b.ctx, c, d, BnParams{}, a.f("x"), a.f("skip"),
                                                a.f("gamma"), a.f("beta"), a.f("rmean"),
                                                a.f("rvar"), a.f("z"));
              return;
            }
            b.batchnorm_forward_eval(b.ctx, c, d, BnParams{}, a.f("x"), a.f("gamma"), a.f("beta"),
                                     a.f("rmean"), a.f("rvar"), a.f("z"));
            b.add(b.ctx, t, a.f("z"), a.f("skip"), a.f("z"));
            b.relu_forward(b.ctx, t, a.f("z"), a.f("z"));
          }};
}

PoolDims pool(int64_t n, int64_t c, int64_t hw, int64_t kernel, int64_t stride, int64_t pad) {
  PoolDims d;
  d.n = n, d.c = c, d.h = d.w = hw, d.kernel = kernel, d.stride = stride, d.pad = pad;
  return d;
}
std::string pool_tag(const PoolDims& d) {
  return "k" + std::to_string(d.kernel) + "s" + std::to_string(d.stride) + "p" +
         std::to_string(d.pad) + "_n" + std::to_string(d.n) + "_c" + std::to_string(d.c) + "_" +
         std::to_string(d.h) + "x" + std::to_string(d.w);
}
OpCase maxpool_fwd(const PoolDims& d) {
  const int64_t xs = d.n * d.c * d.h * d.w, ys = d.n * d.c * d.oh() * d.ow();
  return {"maxpool_fwd_" + pool_tag(d),
          kTolExact,
          double(ys) * d.kernel * d.kernel,
          {in("x", xs), out("y", ys), out_i32("argmax", ys)},
          [d](Backend& b, OpCache& c, const Args& a) {
            b.maxpool_forward(b.ctx, c, d, a.f("x"), a.f("y"), a.i("argmax"));
          }};
}
OpCase maxpool_bwd(const PoolDims& d) {
  const int64_t xs = d.n * d.c * d.h * d.w, ys = d.n * d.c * d.oh() * d.ow();
  // dx sums up to kernel^2 / stride^2 contributions per element in scatter order: exact in
  // practice for the reference's order, but a backend may add in another order.
  return {"maxpool_bwd_" + pool_tag(d),
          kTolElementwise,
          double(ys),
          {in("x", xs), in("dy", ys), out("y", ys), out_i32("argmax", ys), out("dx", xs)},
          [d](Backend& b, OpCache& c, const Args& a) {
            b.maxpool_forward(b.ctx, c, d, a.f("x"), a.f("y"), a.i("argmax"));
            b.maxpool_backward(b.ctx, c, d, a.f("dy"), a.i("argmax"), a.f("dx"));
          }};
}
OpCase avgpool_fwd(int64_t n, int64_t c, int64_t hw, Layout l = Layout::nchw) {
  const std::string tag =
      "n" + std::to_string(n) + "_c" + std::to_string(c) + "_hw" + std::to_string(hw);
  return {"global_avgpool_fwd_" + tag,
          kTolElementwise,
          double(n * c * hw),
          {in("x", n * c * hw), out("y", n * c)},
          [n, c, hw, l](Backend& b, OpCache&, const Args& a) {
            b.global_avgpool_forward(b.ctx, n, c, hw, l, a.f("x"), a.f("y"));
          }};
}
OpCase avgpool_bwd(int64_t n, int64_t c, int64_t hw, Layout l = Layout::nchw) {
  const std::string tag =
      "n" + std::to_string(n) + "_c" + std::to_string(c) + "_hw" + std::to_string(hw);
  return {"global_avgpool_bwd_" + tag,
          kTolElementwise,
          double(n * c * hw),
          {in("dy", n * c), out("dx", n * c * hw)},
          [n, c, hw, l](Backend& b, OpCache&, const Args& a) {
            b.global_avgpool_backward(b.ctx, n, c, hw, l, a.f("dy"), a.f("dx"));
          }};
}

// A StepCursor in a backend's memory for one run of a case (ops read it there). Not one of the
// case's buffers: those move 4 bytes off alignment on odd runs, and the cursor's int64 fields
// are read on the device.
struct CursorOn {
  Backend& b;
  StepCursor* p;
  CursorOn(Backend& be, const StepCursor& c)
      : b(be), p(static_cast<StepCursor*>(be.alloc(be.ctx, sizeof(StepCursor)))) {
    be.upload(be.ctx, p, &c, sizeof(c));
  }
  ~CursorOn() { b.free(b.ctx, p); }
  StepCursor read() const {
    StepCursor c;
    b.download(b.ctx, &c, p, sizeof(c));
    return c;
  }
};

// at_step >= 0: a training batch, the one at step at_step of an epoch (a cursor says where; the
// indices hold that epoch's 3 batches and 2 more).
OpCase gather(int64_t n, int channels, int hw, bool augment, int64_t at_step = -1,
              Layout l = Layout::nchw) {
  const int64_t count = 50, image = int64_t(channels) * hw * hw;
  BatchSpec s;
  s.n = n, s.channels = channels, s.height = s.width = hw, s.augment = augment, s.pad = 4;
  s.layout = l;
  s.seed = 0x1234abcdull;
  const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, sd[3] = {0.2470f, 0.2435f, 0.2616f};
  for (int c = 0; c < channels; ++c) s.mean[c] = mean[c], s.inv_std[c] = 1.f / sd[c];
  StepCursor at;
  at.step = at_step, at.stride = n, at.count = 3 * n + 2, at.epoch = 2, at.seed = 77;
  const int64_t indices = at_step >= 0 ? at.count : n;
  return {"gather_batch_n" + std::to_string(n) + "_c" + std::to_string(channels) + "_" +
              std::to_string(hw) + (augment ? "_augment" : "_plain") +
              (at_step >= 0 ? "_step" + std::to_string(at_step) : ""),
          kTolElementwise,
          3.0 * n * image,
          {in_u8("images", count * image), in_u8("labels", count, 0, 9),
           in_i32("indices", indices, 0, count - 1), out("x", n * image), out_i32("y", n)},
          [s, at, at_step](Backend& b, OpCache&, const Args& a) {
            BatchSpec spec = s;
            std::optional<CursorOn> cursor;
            if (at_step >= 0) spec.cursor = cursor.emplace(b, at).p;
            b.gather_batch(b.ctx, spec, a.u("images"), a.u("labels"), a.i("indices"), a.f("x"),
                           a.i("y"));
          }};
}

// Three steps on one parameter array (step counts 1, 2, 3: the bias corrections change), each
// reading its step count from a cursor that advance_cursor moves on.
OpCase adam(int64_t n, float wd) {
  AdamParams hp;
  hp.lr = 1e-2f, hp.weight_decay = wd;
  return {"adam_3steps_" + std::to_string(n) + (wd != 0 ? "_wd" : ""),
          kTolElementwise,
          3 * 12.0 * n,
          {inout("p", n), in("g", n), inout("m", n, -0.1, 0.1), inout("v", n, 1e-4, 1e-2)},
          [n, hp](Backend& b, OpCache&, const Args& a) {
            const CursorOn at(b, StepCursor{});
            for (int64_t step = 1; step <= 3; ++step) {
              b.adam_update(b.ctx, n, a.f("p"), a.f("g"), a.f("m"), a.f("v"), hp, at.p);
              b.advance_cursor(b.ctx, at.p);
            }
            const StepCursor c = at.read();
            EXPECT_EQ(c.updates, 3) << "advance_cursor counts updates";
            EXPECT_EQ(c.step, 3) << "advance_cursor counts steps";
          }};
}
OpCase sgd(int64_t n, float momentum, float wd, bool nesterov) {
  SgdParams hp;
  hp.lr = 0.1f, hp.momentum = momentum, hp.weight_decay = wd, hp.nesterov = nesterov;
  return {"sgd_2steps_" + std::to_string(n) + (momentum != 0 ? "_momentum" : "") +
              (nesterov ? "_nesterov" : "") + (wd != 0 ? "_wd" : ""),
          kTolElementwise,
          2 * 5.0 * n,
          {inout("p", n), in("g", n), inout("buf", n, -0.1, 0.1)},
          [n, hp](Backend& b, OpCache&, const Args& a) {
            for (int step = 0; step < 2; ++step)
              b.sgd_update(b.ctx, n, a.f("p"), a.f("g"), a.f("buf"), hp);
          }};
}

// ---------------------------------------------------------------------------------------------
// The table. ResNet-50 on CIFAR (32x32): stem 7x7/2 to 16x16, max-pool to 8x8, stages at 8x8,
// 4x4, 2x2, 1x1; batch 2 keeps the reference fast, batch 3 is a partial last batch.

// Convolution shapes, each tested in all three directions (and on the CPU in every mode that
// may run it: CpuConvModes below).
std::vector<ConvDims> conv_table() {
  return {
      conv(2, 3, 32, 64, 7, 2, 3),     // stem
      conv(2, 64, 8, 256, 1, 1, 0),    // layer1 expand (and its projection)
      conv(2, 64, 8, 64, 3, 1, 1),     // layer1 3x3
      conv(2, 128, 8, 128, 3, 2, 1),   // layer2 first 3x3, stride 2 (v1.5)
      conv(2, 256, 8, 512, 1, 2, 0),   // layer2 projection shortcut, 1x1 stride 2
      conv(2, 512, 1, 512, 3, 1, 1),   // layer4 3x3 on a 1x1 map: only the centre tap
      conv(2, 512, 2, 512, 3, 2, 1),   // layer4 first 3x3, 2x2 -> 1x1
      conv(2, 512, 1, 2048, 1, 1, 0),  // layer4 expand on a 1x1 map
      conv(2, 8, 9, 12, 3, 2, 1),      // odd map, channels not a multiple of 8
      // Small maps run as matmuls on the CPU (conv2d.cpp's candidates): unfold, im2col, channels.
      conv(2, 256, 2, 256, 3, 1, 1),    // layer3 3x3 on 2x2: unfolded weights
      conv(2, 5, 3, 7, 3, 1, 1),        // 3x3 map under a 3x3 kernel, odd channels
      conv(2, 6, 2, 4, 3, 2, 1),        // 2x2 -> 1x1: the first row and column of taps unused
      conv(2, 1024, 2, 2048, 1, 2, 0),  // layer4 projection, 1x1 stride 2 on 2x2
      conv(2, 256, 2, 1024, 1, 1, 0),   // layer3 expand on 2x2
      conv(2, 12, 5, 9, 1, 2, 0),       // odd map and stride 2: skipped positions
      conv(2, 256, 4, 256, 3, 2, 1),    // layer3 first 3x3, 4x4 -> 2x2: patches with padding
      conv(2, 5, 5, 3, 3, 3, 2),        // im2col with stride 3, pad 2, odd channels
      conv(2, 128, 4, 512, 1, 1, 0),    // layer2 expand on 4x4: plain or channels
      conv(3, 7, 3, 5, 1, 1, 0),        // 1x1 on an odd map, odd channels
  };
}

std::vector<OpCase> op_table() {
  std::vector<OpCase> t;
  for (const ConvDims& d : conv_table()) {
    t.push_back(conv_fwd(d));
    t.push_back(conv_bwd_data(d));
    t.push_back(conv_bwd_weights(d));
  }
  t.push_back(conv_step(conv(2, 64, 8, 256, 1, 1, 0)));
  t.push_back(conv_step(conv(3, 3, 32, 64, 7, 2, 3)));  // partial batch, fresh cache
  t.push_back(conv_step(conv(3, 128, 8, 128, 3, 2, 1)));

  for (bool relu : {false, true}) {
    t.push_back(dense_fwd({32, 784, 128}, true, relu));
    t.push_back(dense_fwd({3, 2048, 10}, true, relu));
  }
  t.push_back(dense_fwd({32, 128, 10}, false, false));
  for (bool dx : {true, false})
    for (bool db : {true, false}) t.push_back(dense_bwd({32, 784, 128}, dx, db));
  t.push_back(dense_bwd({3, 2048, 10}, true, true));

  t.push_back(relu_fwd(100003));
  t.push_back(relu_bwd(100003));
  t.push_back(add_op(100003));
  t.push_back(add_inplace(100003));
  t.push_back(softmax_ce(32, 10, true));
  t.push_back(softmax_ce(3, 10, true));
  t.push_back(softmax_ce(32, 10, false));

  t.push_back(bn_train({2, 64, 256}));  // after the stem
  t.push_back(bn_train({2, 256, 64}));  // layer1
  t.push_back(bn_train({2, 2048, 1}));  // layer4 on a 1x1 map: 2 values per channel
  t.push_back(bn_train({3, 128, 16}));  // partial batch
  t.push_back(bn_train({2, 1024, 4}));  // layer3, 2x2 maps
  t.push_back(bn_train({3, 37, 49}));   // odd channel count and map (a ragged last block)
  t.push_back(bn_train({2, 5, 81}));    // rows not a multiple of the vector width
  t.push_back(bn_eval({2, 64, 256}));
  t.push_back(bn_eval({3, 2048, 1}));
  t.push_back(bn_eval({3, 37, 49}));
  t.push_back(bn_bwd({2, 64, 256}));
  t.push_back(bn_bwd({2, 2048, 1}));
  t.push_back(bn_bwd({3, 128, 16}));
  t.push_back(bn_bwd({3, 37, 49}));
  t.push_back(bn_bwd({2, 5, 81}));
  // {8, 16, 1024} and {7, 3, 1000}: 4k+ values in few channels, which CUDA cuts into slices
  // (the latter raggedly).
  for (const BnDims& d :
       {BnDims{2, 64, 256}, BnDims{2, 1024, 4}, BnDims{3, 37, 49}, BnDims{2, 5, 81},
        BnDims{3, 512, 1}, BnDims{8, 16, 1024}, BnDims{7, 3, 1000}}) {
    t.push_back(bn_relu_train(d));
    t.push_back(bn_relu_eval(d));
    t.push_back(bn_relu_bwd(d));
    t.push_back(bn_add_relu_train(d));
    t.push_back(bn_add_relu_eval(d));
  }

  t.push_back(maxpool_fwd(pool(2, 64, 16, 3, 2, 1)));  // the stem's pool
  t.push_back(maxpool_fwd(pool(3, 5, 7, 3, 2, 1)));    // odd map
  t.push_back(maxpool_bwd(pool(2, 64, 16, 3, 2, 1)));
  t.push_back(maxpool_bwd(pool(3, 5, 7, 3, 2, 1)));
  t.push_back(maxpool_bwd(pool(2, 4, 8, 2, 2, 0)));  // non-overlapping windows
  t.push_back(avgpool_fwd(2, 2048, 1));              // ResNet-50/CIFAR ends on a 1x1 map
  t.push_back(avgpool_fwd(3, 512, 16));
  t.push_back(avgpool_bwd(2, 2048, 1));
  t.push_back(avgpool_bwd(3, 512, 16));

  t.push_back(gather(32, 1, 28, false));  // Fashion-MNIST
  t.push_back(gather(32, 3, 32, false));  // CIFAR
  t.push_back(gather(32, 3, 32, true));   // CIFAR, crop + flip
  t.push_back(gather(3, 3, 32, true));
  t.push_back(gather(32, 1, 28, false, 1));  // a training batch where a cursor says
  t.push_back(gather(32, 3, 32, true, 2));   // ... the epoch's last full one

  t.push_back(adam(300007, 0.f));  // above the CPU's parallel threshold, odd tail
  t.push_back(adam(1001, 1e-4f));
  t.push_back(sgd(300007, 0.9f, 5e-4f, true));
  t.push_back(sgd(1001, 0.9f, 0.f, false));
  t.push_back(sgd(1001, 0.f, 5e-4f, false));
  return t;
}

// ---------------------------------------------------------------------------------------------
// The harness

uint32_t seed_of(const std::string& s) {  // FNV-1a: stable across runs and platforms
  uint32_t h = 2166136261u;
  for (unsigned char ch : s) h = (h ^ ch) * 16777619u;
  return h;
}

// Initial host contents of every buffer: random inputs and in-outs, poisoned outputs.
std::vector<std::vector<uint8_t>> make_host(const OpCase& c) {
  std::vector<std::vector<uint8_t>> host;
  std::mt19937 rng(seed_of(c.name));
  for (const auto& s : c.bufs) {
    std::vector<uint8_t> h(s.bytes());
    if (s.type == Type::f32) {
      auto* p = reinterpret_cast<float*>(h.data());
      std::uniform_real_distribution<float> u(float(s.lo), float(s.hi));
      for (int64_t i = 0; i < s.count; ++i) {
        if (s.role == Role::out)
          p[i] = kNaN;
        else
          do p[i] = u(rng);
          while (p[i] == 0.f);
      }
    } else {
      std::uniform_int_distribution<int64_t> u(int64_t(s.lo), int64_t(s.hi));
      for (int64_t i = 0; i < s.count; ++i) {
        const int64_t v = s.role == Role::out ? kPoisonI32 : u(rng);
        if (s.type == Type::i32)
          reinterpret_cast<int32_t*>(h.data())[i] = int32_t(v);
        else
          h[i] = uint8_t(v);
      }
    }
    host.push_back(std::move(h));
  }
  return host;
}

// Uploads `init` and runs the case `reps` times on one OpCache, re-uploading before each run;
// returns every buffer as downloaded after each run. Odd runs place every buffer 4 bytes past
// an aligned address: the trainer hands ops pointers into one packed parameter array, at
// offsets with no alignment, and cached primitives must follow a pointer that moves.
using HostBufs = std::vector<std::vector<uint8_t>>;
std::vector<HostBufs> run_on(Backend& be, const OpCase& c, const HostBufs& init, int reps) {
  std::vector<void*> base;
  for (const auto& s : c.bufs) base.push_back(be.alloc(be.ctx, s.bytes() + 64));
  std::vector<HostBufs> got(size_t(reps), HostBufs(c.bufs.size()));
  try {
    OpCache cache;
    for (int rep = 0; rep < reps; ++rep) {
      Args a;
      a.specs = &c.bufs;
      for (size_t i = 0; i < c.bufs.size(); ++i) {
        a.ptr.push_back(static_cast<char*>(base[i]) + (rep % 2) * 4);
        be.upload(be.ctx, a.ptr[i], init[i].data(), init[i].size());
      }
      c.run(be, cache, a);
      for (size_t i = 0; i < c.bufs.size(); ++i) {
        got[rep][i].resize(init[i].size());
        be.download(be.ctx, got[rep][i].data(), a.ptr[i], got[rep][i].size());
      }
    }
  } catch (...) {
    for (void* p : base) be.free(be.ctx, p);
    throw;
  }
  for (void* p : base) be.free(be.ctx, p);
  return got;
}

using testing::rel_err;

// The NCHW contents of a case's buffers as an NHWC run wants them (to_nhwc) or back: every
// activation transposed between [n, c, hw] and [n, hw, c], and argmax indices remapped alike.
HostBufs relayout(const OpCase& c, const HostBufs& bufs, bool to_nhwc) {
  HostBufs out = bufs;
  for (size_t b = 0; b < c.bufs.size(); ++b) {
    const BufSpec& s = c.bufs[b];
    if (s.act_hw <= 1) continue;
    const int64_t C = s.act_c, HW = s.act_hw, n = s.count / (C * HW), XHW = s.index_hw;
    auto map_index = [&](int32_t v) {           // a flat index into x, from one layout to the other
      if (v < 0 || v >= n * C * XHW) return v;  // a poisoned or wrong value stays visible
      const int64_t i = v / (C * XHW);
      const int64_t ch = to_nhwc ? v / XHW % C : v % C, p = to_nhwc ? v % XHW : v / C % XHW;
      return int32_t(to_nhwc ? (i * XHW + p) * C + ch : (i * C + ch) * XHW + p);
    };
    // f32 or i32 alike: moved as 32-bit words.
    auto* to = reinterpret_cast<int32_t*>(out[b].data());
    testing::transpose_maps(reinterpret_cast<const int32_t*>(bufs[b].data()), to, n, C, HW,
                            to_nhwc);
    if (XHW > 0)
      for (int64_t k = 0; k < s.count; ++k) to[k] = map_index(to[k]);
  }
  return out;
}

// The backends under test: every built, usable one except the reference, made once per suite.
struct Targets {
  std::unique_ptr<Backend> ref, bf16_ref;
  std::vector<std::unique_ptr<Backend>> others;
};
Targets* g_targets = nullptr;

void make_targets(int threads = 0) {
  if (g_targets) return;
  g_targets = new Targets();
  BackendConfig rc;
  rc.reference = true;
  g_targets->ref = make_backend(rc);
  g_targets->bf16_ref = testing::make_bf16_reference();
  for (const BackendInfo& info : list_backends()) {
    if (info.name == "reference" || !info.built || !info.usable) continue;
    BackendConfig cfg;
    cfg.device = info.device;
    cfg.reference = false;
    if (info.device == DeviceKind::cpu) cfg.threads = threads;
    g_targets->others.push_back(make_backend(cfg));
    // The oneDNN backend in bf16 as well, where this CPU has the instructions for it.
    if (info.device == DeviceKind::cpu && cpu::cpu_has_bf16_kernels()) {
      cfg.precision = Precision::bf16;
      g_targets->others.push_back(make_backend(cfg));
    }
  }
}
// "cpu-onednn", "cpu-onednn/bf16": the backend and, where not fp32, its precision.
std::string label(const Backend& be) {
  if (be.precision == Precision::fp32) return be.name;
  return be.name + "/" + precision_name(be.precision);
}
void drop_targets() {
  delete g_targets;
  g_targets = nullptr;
}

class BackendOpsTable : public ::testing::TestWithParam<OpCase> {
 protected:
  static void SetUpTestSuite() { make_targets(); }
  static void TearDownTestSuite() { drop_targets(); }
};

// The cases whose products a bf16 backend computes in bf16: convolutions and dense layers.
bool has_bf16_products(const OpCase& c) {
  return c.name.rfind("conv2d_", 0) == 0 || c.name.rfind("dense_", 0) == 0;
}

bool is_bf16_case(const Backend& be, const OpCase& c) {
  return be.precision == Precision::bf16 && has_bf16_products(c);
}

// Runs the case twice on `be` (see run_on) and checks both against the reference's `want`:
// inputs unchanged, float outputs within the case's tolerance, int32 outputs exact. On a bf16
// backend the GEMM and convolution cases are held to kTolBf16 against `want`, must show bf16's
// rounding, and must match `want_bf16` (the reference on rounded operands) to kTolGemm.
// nhwc: c runs under NHWC (its activations marked); init and want are NCHW.
void expect_matches(Backend& be, const OpCase& c, const HostBufs& init, const HostBufs& want,
                    const std::string& label, const HostBufs* want_bf16 = nullptr,
                    bool nhwc = false) {
  auto runs = run_on(be, c, nhwc ? relayout(c, init, true) : init, 2);
  if (nhwc)
    for (HostBufs& r : runs) r = relayout(c, r, false);
  const bool bf16_case = is_bf16_case(be, c);
  ASSERT_TRUE(!bf16_case || want_bf16) << "a bf16 case needs the reference on bf16 operands";
  const double tol = bf16_case ? kTolBf16 : c.tol;
  double worst = 0, worst_bf16 = 0;
  for (size_t rep = 0; rep < runs.size(); ++rep) {
    SCOPED_TRACE(rep == 0 ? "first call, aligned pointers" : "cached call, pointers 4 bytes off");
    const HostBufs& got = runs[rep];
    for (size_t i = 0; i < c.bufs.size(); ++i) {
      const BufSpec& s = c.bufs[i];
      if (s.role == Role::in) {
        EXPECT_EQ(got[i], init[i]) << "input " << s.name << " was modified";
      } else if (s.type == Type::f32) {
        const double e = rel_err(reinterpret_cast<const float*>(got[i].data()),
                                 reinterpret_cast<const float*>(want[i].data()), s.count);
        worst = std::max(worst, e);
        EXPECT_LE(e, tol) << "relative norm error of " << s.name;
        if (bf16_case) {
          const double e16 =
              rel_err(reinterpret_cast<const float*>(got[i].data()),
                      reinterpret_cast<const float*>((*want_bf16)[i].data()), s.count);
          worst_bf16 = std::max(worst_bf16, e16);
          EXPECT_LE(e16, kTolGemm) << s.name << " against the reference on bf16 operands";
        }
      } else {
        const auto* g = reinterpret_cast<const int32_t*>(got[i].data());
        const auto* w = reinterpret_cast<const int32_t*>(want[i].data());
        int64_t bad = 0, first = 0;
        for (int64_t k = s.count - 1; k >= 0; --k)
          if (g[k] != w[k]) bad++, first = k;
        EXPECT_EQ(bad, 0) << s.name << " differs in " << bad << " elements, first at " << first
                          << ": " << g[first] << " vs " << w[first];
      }
    }
  }
  if (bf16_case) {
    EXPECT_GE(worst, kMinErrBf16) << "as exact as fp32: these products did not run in bf16";
  }
  std::printf("  [%s] %-52s max rel err %.2e (tol %.0e)", label.c_str(), c.name.c_str(), worst,
              tol);
  if (bf16_case) std::printf(", %.2e on bf16 operands (tol %.0e)", worst_bf16, kTolGemm);
  std::printf("\n");
}

TEST_P(BackendOpsTable, MatchesReference) {
  const OpCase& c = GetParam();
  if (g_targets->others.empty()) GTEST_SKIP() << "no backend besides the reference is usable here";
  const auto init = make_host(c);
  const HostBufs want = run_on(*g_targets->ref, c, init, 1)[0];
  std::optional<HostBufs> want_bf16;
  for (auto& be : g_targets->others) {
    SCOPED_TRACE(label(*be));
    if (is_bf16_case(*be, c) && !want_bf16) want_bf16 = run_on(*g_targets->bf16_ref, c, init, 1)[0];
    expect_matches(*be, c, init, want, label(*be), want_bf16 ? &*want_bf16 : nullptr);
  }
}

// The oneDNN backend times the candidate implementations of a convolution direction and keeps
// the faster (conv2d.cpp), so the table above tests whichever won on this machine. Here every
// convolution case runs in each mode that may serve its shape, forced, in fp32 and (where the CPU
// has it) bf16; the table's shapes must reach every mode.
TEST(CpuConvModes, EveryCandidateMatchesReference) {
  BackendConfig rc;
  rc.reference = true;
  auto ref = make_backend(rc);
  auto bf16_ref = testing::make_bf16_reference();
  std::vector<Precision> precisions = {Precision::fp32};
  if (cpu::cpu_has_bf16_kernels()) precisions.push_back(Precision::bf16);
  for (Precision prec : precisions) {
    SCOPED_TRACE(precision_name(prec));
    BackendConfig cfg;
    cfg.precision = prec;
    auto cpu = make_backend(cfg);
    ASSERT_EQ(cpu->name, "cpu-onednn");
    auto& cx = *static_cast<cpu::Context*>(cpu->ctx);
    auto mode_label = [&](cpu::ConvMode m) { return label(*cpu) + " " + cpu::conv_mode_name(m); };
    std::set<cpu::ConvMode> seen;
    for (const Layout layout : {Layout::nchw, Layout::nhwc}) {
      SCOPED_TRACE(layout_name(layout));
      const bool nhwc = layout == Layout::nhwc;
      for (ConvDims d : conv_table()) {
        d.layout = layout;
        ConvDims plain = d;  // the reference's
        plain.layout = Layout::nchw;
        // The case under d's layout, its activations marked for the harness to transpose.
        auto marked = [&](OpCase c) {
          mark(c, {"x", "dx"}, d.c, d.h * d.w);
          mark(c, {"y", "dy"}, d.k, d.oh() * d.ow());
          return c;
        };
        // The reference's results on the operands as they are and, under bf16, rounded.
        auto wants = [&](const OpCase& c, const HostBufs& init) {
          std::pair<HostBufs, std::optional<HostBufs>> w{run_on(*ref, c, init, 1)[0], std::nullopt};
          if (prec == Precision::bf16) w.second = run_on(*bf16_ref, c, init, 1)[0];
          return w;
        };
        const OpCase cases[][2] = {{conv_fwd(plain), marked(conv_fwd(d))},
                                   {conv_bwd_data(plain), marked(conv_bwd_data(d))},
                                   {conv_bwd_weights(plain), marked(conv_bwd_weights(d))},
                                   // The executor's order on one cache: the data gradient may reuse
                                   // what the weight gradient left in the scratch (dy rearranged);
                                   // run_on's second run moves dy, which must not be.
                                   {conv_step(plain), marked(conv_step(d))}};
        for (const auto& [c_ref, c] : cases) {
          const auto init = make_host(c_ref);
          const auto [want, want_bf16] = wants(c_ref, init);
          for (cpu::ConvMode m : cpu::conv2d_candidates(d, prec == Precision::bf16)) {
            SCOPED_TRACE(cpu::conv_mode_name(m));
            cx.conv_mode = m;
            expect_matches(*cpu, c, init, want, mode_label(m) + (nhwc ? " nhwc" : ""),
                           want_bf16 ? &*want_bf16 : nullptr, nhwc);
            seen.insert(m);
          }
          cx.conv_mode.reset();
        }
      }
    }
    for (cpu::ConvMode m : {cpu::ConvMode::plain, cpu::ConvMode::blocked, cpu::ConvMode::unfold,
                            cpu::ConvMode::im2col, cpu::ConvMode::channels})
      EXPECT_TRUE(seen.count(m)) << "no table shape runs in mode " << cpu::conv_mode_name(m);
  }
}

// The CPU's NHWC paths of every op that reads a map (the convolutions are above): each case built
// under NCHW for the reference and under NHWC for the backend, which the harness feeds transposed.
TEST(CpuNhwc, EveryMapOpMatchesReference) {
  BackendConfig rc;
  rc.reference = true;
  auto ref = make_backend(rc);
  auto cpu = make_backend(BackendConfig{});
  ASSERT_TRUE(cpu->nhwc);
  std::vector<std::pair<OpCase, OpCase>> cases;  // {reference's, backend's (marked)}
  auto bn_pair = [&](OpCase (*make)(const BnDims&), BnDims d) {
    OpCase c_ref = make(d);
    d.layout = Layout::nhwc;
    OpCase c = make(d);
    mark(c, {"x", "y", "dy", "dx", "z", "dz", "skip"}, d.c, d.hw);
    cases.emplace_back(std::move(c_ref), std::move(c));
  };
  for (const BnDims& d : {BnDims{2, 64, 256}, BnDims{2, 1024, 4}, BnDims{3, 37, 49},
                          BnDims{2, 5, 81}, BnDims{3, 512, 1}, BnDims{8, 16, 1024}}) {
    for (auto make : {bn_train, bn_eval, bn_bwd, bn_relu_train, bn_relu_eval, bn_relu_bwd,
                      bn_add_relu_train, bn_add_relu_eval})
      bn_pair(make, d);
  }
  for (PoolDims d : {pool(2, 64, 16, 3, 2, 1), pool(3, 5, 7, 3, 2, 1), pool(2, 4, 8, 2, 2, 0)}) {
    for (auto make : {maxpool_fwd, maxpool_bwd}) {
      OpCase c_ref = make(d);
      PoolDims dn = d;
      dn.layout = Layout::nhwc;
      OpCase c = make(dn);
      mark(c, {"x", "dx"}, d.c, d.h * d.w);
      mark(c, {"y", "dy"}, d.c, d.oh() * d.ow());
      mark(c, {"argmax"}, d.c, d.oh() * d.ow(), d.h * d.w);
      cases.emplace_back(std::move(c_ref), std::move(c));
    }
  }
  for (int64_t hw : {1, 16, 49}) {
    for (auto make : {avgpool_fwd, avgpool_bwd}) {
      OpCase c = make(3, 37, hw, Layout::nhwc);
      mark(c, {"x", "dx"}, 37, hw);
      cases.emplace_back(make(3, 37, hw, Layout::nchw), std::move(c));
    }
  }
  for (const auto& [ch, hw, augment, step] :
       {std::tuple{1, 28, false, -1}, {3, 32, false, -1}, {3, 32, true, 2}, {3, 32, false, 1}}) {
    OpCase c = gather(5, ch, hw, augment, step, Layout::nhwc);
    mark(c, {"x"}, ch, hw * hw);
    cases.emplace_back(gather(5, ch, hw, augment, step), std::move(c));
  }
  for (const auto& [c_ref, c] : cases) {
    SCOPED_TRACE(c.name);
    ASSERT_EQ(c.name, c_ref.name);  // the same name: the same random inputs
    const auto init = make_host(c_ref);
    const HostBufs want = run_on(*ref, c_ref, init, 1)[0];
    expect_matches(*cpu, c, init, want, label(*cpu) + " nhwc", nullptr, true);
  }
}

INSTANTIATE_TEST_SUITE_P(BackendOps, BackendOpsTable, ::testing::ValuesIn(op_table()),
                         [](const auto& info) { return info.param.name; });

TEST(BackendOps, TableCoversEveryOpEntry) {
  const char* ops[] = {"gather_batch",
                       "dense_fwd",
                       "dense_bwd",
                       "relu_fwd",
                       "relu_bwd",
                       "add",
                       "softmax_ce",
                       "conv2d_fwd",
                       "conv2d_bwd_data",
                       "conv2d_bwd_weights",
                       "batchnorm_train",
                       "batchnorm_eval",
                       "batchnorm_bwd",
                       "maxpool_fwd",
                       "maxpool_bwd",
                       "global_avgpool_fwd",
                       "global_avgpool_bwd",
                       "adam",
                       "sgd"};
  const auto table = op_table();
  for (const char* op : ops)
    EXPECT_TRUE(std::any_of(table.begin(), table.end(),
                            [&](const OpCase& c) { return c.name.rfind(op, 0) == 0; }))
        << op << " has no case in the table";
  for (size_t i = 0; i < table.size(); ++i)
    for (size_t j = i + 1; j < table.size(); ++j) EXPECT_NE(table[i].name, table[j].name);
}

// CPU bf16 keeps a bf16 mirror of the registered parameter array for the weights its matmuls read
// (set_param_array); every way the array is written (upload, copy, fill, the optimizers) must
// reach the mirror. A dense layer whose weights sit in the array gives, after each kind of
// write, the same result to the bit as a backend that converts the weights at every call.
TEST(CpuBf16, WeightMirrorFollowsEveryWrite) {
  if (!cpu::cpu_has_bf16_kernels()) GTEST_SKIP() << "this CPU has no bf16 instructions";
  const DenseDims d{8, 40, 24};
  const int64_t wn = d.out * d.in, pn = wn + 19;  // the weights at offset 5; Adam gets a tail
  std::vector<float> host(static_cast<size_t>(pn)), x(static_cast<size_t>(d.n * d.in));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& v : host) v = u(rng);
  for (float& v : x) v = u(rng);
  auto make = [](bool reuse) {
    BackendConfig cfg;
    cfg.precision = Precision::bf16, cfg.reuse_bf16 = reuse;
    return make_backend(cfg);
  };
  auto mirror = make(true), convert = make(false);
  struct Run {
    Backend* be;
    float *params, *x, *y, *g, *m, *v;
    OpCache cache;
  };
  std::vector<std::unique_ptr<Run>> runs;
  for (Backend* be : {mirror.get(), convert.get()}) {
    auto r = std::make_unique<Run>();
    r->be = be;
    auto alloc = [be](int64_t n) { return static_cast<float*>(be->alloc(be->ctx, size_t(n) * 4)); };
    r->params = alloc(pn), r->x = alloc(d.n * d.in), r->y = alloc(d.n * d.out);
    r->g = alloc(pn), r->m = alloc(pn), r->v = alloc(pn);
    be->upload(be->ctx, r->params, host.data(), size_t(pn) * 4);
    be->upload(be->ctx, r->x, x.data(), x.size() * 4);
    be->fill(be->ctx, r->g, 0.25f, pn);
    if (be->set_param_array) be->set_param_array(be->ctx, r->params, pn);
    runs.push_back(std::move(r));
  }
  ASSERT_TRUE(mirror->set_param_array) << "bf16 with reuse keeps a mirror";
  auto outputs = [&](const char* after) {
    SCOPED_TRACE(after);
    std::vector<float> y[2];
    for (int i = 0; i < 2; ++i) {
      Run& r = *runs[size_t(i)];
      r.be->dense_forward(r.be->ctx, r.cache, d, r.x, r.params + 5, nullptr, r.y, false);
      y[i].resize(size_t(d.n * d.out));
      r.be->download(r.be->ctx, y[i].data(), r.y, y[i].size() * 4);
    }
    EXPECT_EQ(y[0], y[1]);
  };
  outputs("registration");
  std::vector<float> part(100);
  for (float& v : part) v = u(rng);
  for (auto& r : runs) r->be->upload(r->be->ctx, r->params + 50, part.data(), part.size() * 4);
  outputs("upload into the array");
  for (auto& r : runs) r->be->fill(r->be->ctx, r->params + 300, 0.5f, 200);
  outputs("fill");
  for (auto& r : runs) r->be->copy(r->be->ctx, r->params + 700, r->x, 64 * 4);
  outputs("copy");
  AdamParams hp;
  StepCursor at{};
  for (auto& r : runs) r->be->adam_update(r->be->ctx, pn, r->params, r->g, r->m, r->v, hp, &at);
  outputs("adam");
  SgdParams sgd;
  sgd.lr = 0.1f, sgd.momentum = 0.9f;
  for (auto& r : runs) r->be->sgd_update(r->be->ctx, pn, r->params, r->g, r->m, sgd);
  outputs("sgd");
  for (auto& r : runs)
    for (float* p : {r->params, r->x, r->y, r->g, r->m, r->v}) r->be->free(r->be->ctx, p);
}

// CPU bf16 with reuse_bf16 keeps a convolution's converted operands from one direction for the
// next of the same step (x, W, dy: conv2d.cpp, conv2d_forms.cpp). Over two steps on the same
// buffers, with new values written between them as the optimizer and the next batch do, every
// mode must give the results of a backend that converts at every call, to the bit.
TEST(CpuBf16, ConvKeptCopiesFollowNewValues) {
  if (!cpu::cpu_has_bf16_kernels()) GTEST_SKIP() << "this CPU has no bf16 instructions";
  auto make = [](bool reuse) {
    BackendConfig cfg;
    cfg.precision = Precision::bf16, cfg.reuse_bf16 = reuse;
    return make_backend(cfg);
  };
  auto keep = make(true), convert = make(false);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  const ConvDims shapes[] = {conv(4, 32, 2, 48, 3, 1, 1), conv(4, 32, 4, 48, 1, 1, 0),
                             conv(4, 32, 4, 48, 3, 2, 1), conv(4, 16, 8, 32, 3, 1, 1),
                             conv(4, 16, 8, 32, 1, 2, 0)};
  std::set<cpu::ConvMode> seen;
  for (const Layout layout : {Layout::nhwc, Layout::nchw})
    for (ConvDims d : shapes) {
      d.layout = layout;
      for (cpu::ConvMode m : cpu::conv2d_candidates(d, true)) {
        SCOPED_TRACE(conv_tag(d) + " " + layout_name(layout) + " " + cpu::conv_mode_name(m));
        seen.insert(m);
        const size_t nx = size_t(x_count(d)), nw = size_t(w_count(d)), ny = size_t(y_count(d));
        struct Run {
          Backend* be = nullptr;
          float *x = nullptr, *w = nullptr, *dy = nullptr, *y = nullptr, *dw = nullptr,
                *dx = nullptr;
          OpCache cache;
        };
        Run runs[2];
        runs[0].be = keep.get(), runs[1].be = convert.get();
        for (Run& r : runs) {
          static_cast<cpu::Context*>(r.be->ctx)->conv_mode = m;
          auto alloc = [&r](size_t n) {
            return static_cast<float*>(r.be->alloc(r.be->ctx, n * 4));
          };
          r.x = alloc(nx), r.w = alloc(nw), r.dy = alloc(ny);
          r.y = alloc(ny), r.dw = alloc(nw), r.dx = alloc(nx);
        }
        for (int step = 0; step < 2; ++step) {
          std::vector<float> x(nx), w(nw), dy(ny);
          for (auto* v : {&x, &w, &dy})
            for (float& e : *v) e = u(rng);
          std::vector<float> out[2][3];
          for (int i = 0; i < 2; ++i) {
            Run& r = runs[i];
            Backend& b = *r.be;
            b.upload(b.ctx, r.x, x.data(), nx * 4);
            b.upload(b.ctx, r.w, w.data(), nw * 4);
            b.upload(b.ctx, r.dy, dy.data(), ny * 4);
            b.conv2d_forward(b.ctx, r.cache, d, r.x, r.w, r.y);
            b.conv2d_backward_weights(b.ctx, r.cache, d, r.x, r.dy, r.dw);
            b.conv2d_backward_data(b.ctx, r.cache, d, r.dy, r.w, r.dx);
            const std::pair<const float*, size_t> got[] = {{r.y, ny}, {r.dw, nw}, {r.dx, nx}};
            for (int k = 0; k < 3; ++k) {
              out[i][k].resize(got[k].second);
              b.download(b.ctx, out[i][k].data(), got[k].first, got[k].second * 4);
            }
          }
          EXPECT_EQ(out[0][0], out[1][0]) << "y, step " << step;
          EXPECT_EQ(out[0][1], out[1][1]) << "dw, step " << step;
          EXPECT_EQ(out[0][2], out[1][2]) << "dx, step " << step;
        }
        for (Run& r : runs)
          for (float* p : {r.x, r.w, r.dy, r.y, r.dw, r.dx}) r.be->free(r.be->ctx, p);
      }
    }
  for (cpu::ConvMode m : {cpu::ConvMode::plain, cpu::ConvMode::blocked, cpu::ConvMode::unfold,
                          cpu::ConvMode::im2col, cpu::ConvMode::channels})
    EXPECT_TRUE(seen.count(m)) << "no shape here runs in mode " << cpu::conv_mode_name(m);
}

TEST(BackendOps, CpuBackendIsListedAndUsable) {
  bool found = false;
  for (const BackendInfo& info : list_backends())
    if (info.name == "cpu-onednn") found = info.built && info.usable;
  EXPECT_TRUE(found);
  BackendConfig cfg;
  EXPECT_EQ(make_backend(cfg)->name, "cpu-onednn");
}

// ---------------------------------------------------------------------------------------------
// Perf mode: the ResNet-50/CIFAR shapes at batch 128, every backend but the reference. Warm-up
// call (builds the primitives), then the best of several timed runs. Environment:
// TB_PERF_BATCH (128), TB_PERF_THREADS (CPU threads, 0 = all), TB_PERF_FILTER (substring of the
// case name), TB_PERF_BACKEND (substring of the backend's label: "cpu-onednn/bf16"),
// TB_PERF_CONV_MODE (the oneDNN backend's convolutions in this mode where it applies: plain,
// blocked, unfold, im2col, channels; to time one against another).

std::vector<OpCase> perf_table(int64_t n) {
  std::vector<OpCase> t;
  const ConvDims convs[] = {
      conv(n, 3, 32, 64, 7, 2, 3),      // stem
      conv(n, 64, 8, 64, 1, 1, 0),      // layer1 reduce
      conv(n, 64, 8, 64, 3, 1, 1),      // layer1 3x3
      conv(n, 64, 8, 256, 1, 1, 0),     // layer1 expand / projection
      conv(n, 256, 8, 64, 1, 1, 0),     // layer1 reduce (blocks 2, 3)
      conv(n, 256, 8, 128, 1, 1, 0),    // layer2 reduce
      conv(n, 128, 8, 128, 3, 2, 1),    // layer2 3x3 stride 2
      conv(n, 256, 8, 512, 1, 2, 0),    // layer2 projection
      conv(n, 128, 4, 128, 3, 1, 1),    // layer2 3x3
      conv(n, 128, 4, 512, 1, 1, 0),    // layer2 expand
      conv(n, 256, 4, 256, 3, 2, 1),    // layer3 3x3 stride 2
      conv(n, 512, 4, 256, 1, 1, 0),    // layer3 reduce (first block, 4x4)
      conv(n, 1024, 2, 256, 1, 1, 0),   // layer3 reduce
      conv(n, 256, 2, 256, 3, 1, 1),    // layer3 3x3
      conv(n, 256, 2, 1024, 1, 1, 0),   // layer3 expand
      conv(n, 1024, 2, 2048, 1, 2, 0),  // layer4 projection
      conv(n, 512, 2, 512, 3, 2, 1),    // layer4 3x3 stride 2, 2x2 -> 1x1
      conv(n, 512, 1, 512, 3, 1, 1),    // layer4 3x3 on 1x1
      conv(n, 512, 1, 2048, 1, 1, 0),   // layer4 expand
  };
  for (const auto& d : convs) {
    t.push_back(conv_fwd(d));
    t.push_back(conv_bwd_data(d));
    t.push_back(conv_bwd_weights(d));
  }
  t.push_back(bn_train({n, 64, 256}));
  t.push_back(bn_bwd({n, 64, 256}));
  t.push_back(bn_train({n, 256, 64}));
  t.push_back(bn_bwd({n, 256, 64}));
  t.push_back(bn_train({n, 512, 16}));
  t.push_back(bn_bwd({n, 512, 16}));
  t.push_back(bn_train({n, 1024, 4}));
  t.push_back(bn_bwd({n, 1024, 4}));
  t.push_back(bn_train({n, 2048, 1}));
  t.push_back(bn_bwd({n, 2048, 1}));
  t.push_back(bn_eval({n, 256, 64}));
  t.push_back(bn_eval({n, 2048, 1}));
  // NHWC, fp32 maps and bf16 maps (the CPU's bf16 runs; timing only: these buffers hold
  // arbitrary bits where bf16 is read, which the tables above never feed a comparison).
  for (BnDims d : {BnDims{n, 64, 256}, BnDims{n, 64, 64}, BnDims{n, 256, 64}}) {
    d.layout = Layout::nhwc;
    for (bool bf16 : {false, true}) {
      d.x_bf16 = d.y_bf16 = d.dx_bf16 = bf16;
      for (OpCase c : {bn_relu_train(d), bn_relu_bwd(d)}) {
        c.name += "_nhwc";
        t.push_back(std::move(c));
      }
    }
  }
  t.push_back(maxpool_fwd(pool(n, 64, 16, 3, 2, 1)));
  t.push_back(maxpool_bwd(pool(n, 64, 16, 3, 2, 1)));
  t.push_back(avgpool_fwd(n, 2048, 1));
  t.push_back(avgpool_bwd(n, 2048, 1));
  return t;
}

// Wall time is what a run sees; process CPU time (all threads) is also printed because on a
// loaded machine preemption inflates wall time while CPU time stays close to the work done
// (with TB_PERF_THREADS=1 it is the single-core cost).
double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

TEST(BackendOpsPerf, DISABLED_ResNet50CifarShapes) {
  auto env_int = [](const char* name, int64_t def) {
    const char* e = std::getenv(name);
    return e ? std::atoll(e) : def;
  };
  const int64_t n = env_int("TB_PERF_BATCH", 128);
  const int threads = int(env_int("TB_PERF_THREADS", 0));  // 0: all the process may use
  const char* filter = std::getenv("TB_PERF_FILTER");      // substring of the case name
  const char* only = std::getenv("TB_PERF_BACKEND");       // substring of the backend name
  const char* mode = std::getenv("TB_PERF_CONV_MODE");
  drop_targets();
  make_targets(threads);
  if (mode)
    for (auto& be : g_targets->others) {
      if (be->name != "cpu-onednn") continue;
      auto& cx = *static_cast<cpu::Context*>(be->ctx);
      for (auto m : {cpu::ConvMode::plain, cpu::ConvMode::blocked, cpu::ConvMode::unfold,
                     cpu::ConvMode::im2col, cpu::ConvMode::channels})
        if (std::string(cpu::conv_mode_name(m)) == mode) cx.conv_mode = m;
    }
  using Clock = std::chrono::steady_clock;
  for (auto& be : g_targets->others) {
    if (only && label(*be).find(only) == std::string::npos) continue;
    std::printf("%-16s %-48s %9s %9s %9s %8s\n", "backend", "case", "ms", "cpu ms", "GFLOP/s",
                "GB/s");
    for (const OpCase& c : perf_table(n)) {
      if (filter && c.name.find(filter) == std::string::npos) continue;
      auto init = make_host(c);
      // A case on bf16 maps reads these float buffers as pairs of bf16 values: floats rounded to
      // bf16 make each pair (0, v), never a denormal (which would time microcode assists).
      if (c.name.find("_bf16") != std::string::npos)
        for (size_t i = 0; i < c.bufs.size(); ++i)
          if (c.bufs[i].type == Type::f32)
            for (float& v :
                 std::span(reinterpret_cast<float*>(init[i].data()), size_t(c.bufs[i].count)))
              v = bf16_to_f32(f32_to_bf16(v));
      Args a;
      a.specs = &c.bufs;
      for (size_t i = 0; i < c.bufs.size(); ++i) {
        a.ptr.push_back(be->alloc(be->ctx, c.bufs[i].bytes()));
        be->upload(be->ctx, a.ptr[i], init[i].data(), init[i].size());
      }
      OpCache cache;
      c.run(*be, cache, a);  // warm-up: primitives, caches, pages
      be->synchronize(be->ctx);
      double best = INFINITY, best_cpu = INFINITY, total = 0;
      for (int rep = 0; rep < 20 && (rep < 3 || total < 1.0); ++rep) {
        const auto t0 = Clock::now();
        const double c0 = cpu_seconds();
        c.run(*be, cache, a);
        be->synchronize(be->ctx);
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        best = std::min(best, s), best_cpu = std::min(best_cpu, cpu_seconds() - c0), total += s;
      }
      std::printf("%-16s %-48s %9.3f %9.3f %9.1f %8.1f\n", label(*be).c_str(), c.name.c_str(),
                  best * 1e3, best_cpu * 1e3, c.flops / best * 1e-9, c.bytes() / best * 1e-9);
      std::fflush(stdout);
      for (void* p : a.ptr) be->free(be->ctx, p);
    }
  }
  drop_targets();
}

}  // namespace
}  // namespace tb
