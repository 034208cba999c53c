// Finite-difference checks of every reference op's backward (ggml test-backend-ops "grad" mode,
// dlib's test_layer, flashlight's jacobian test). The reference ops are the oracle every backend
// is judged against, so their gradients are judged here against calculus.
//
// Method: a scalar objective L = sum(w * y) with random weights w (so dL/dy = w, a dense random
// upstream gradient), central differences in double over every input element, compared with the
// analytic backward by relative norm error ||a - b|| / ||b|| < 1e-3. The ops compute in float, so
// the step eps is chosen against float rounding: linear ops (dense, conv, pools, add) have no
// truncation error and take eps = 1e-2; smooth non-linear ops (batchnorm, softmax) take 1e-2 too,
// which keeps the truncation error O(eps^2) ~ 1e-4 while the float noise of L / (2 eps) stays
// ~1e-5; piecewise-linear ops (relu, maxpool) take an eps smaller than the distance to a kink.
// The step taken is float(p + eps) - float(p - eps), not 2 eps, so rounding of the perturbed
// input does not bias the quotient. Inputs are random, never zero, with fixed seeds.
//
// The optimizers have no gradient; Adam and SGD are checked against two steps computed by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "ops/add.h"
#include "ops/batchnorm.h"
#include "ops/conv2d.h"
#include "ops/dense.h"
#include "ops/optimizer.h"
#include "ops/pool.h"
#include "ops/relu.h"
#include "ops/softmax_ce.h"

namespace tb {
namespace {

constexpr double kTol = 1e-3;  // relative norm error, analytic vs numeric

// Uniform in [lo, hi] with |x| >= min_abs (never exactly zero).
std::vector<float> randv(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f,
                         float min_abs = 1e-3f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) do
      x = u(rng);
    while (std::fabs(x) < min_abs);
  return v;
}

// sum(w * y) in double: the objective whose gradient with respect to y is w.
double weighted_sum(const std::vector<float>& w, const std::vector<float>& y) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += double(w[i]) * y[i];
  return s;
}

// dL/dp by central differences over every element of p (perturbed in place, then restored).
std::vector<double> numeric_grad(std::vector<float>& p, double eps,
                                 const std::function<double()>& L) {
  std::vector<double> g(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    const float keep = p[i];
    const float hi = float(keep + eps), lo = float(keep - eps);
    p[i] = hi;
    const double l_hi = L();
    p[i] = lo;
    const double l_lo = L();
    p[i] = keep;
    g[i] = (l_hi - l_lo) / (double(hi) - double(lo));
  }
  return g;
}

double rel_err(const std::vector<float>& analytic, const std::vector<double>& numeric) {
  double num = 0, den = 0;
  for (size_t i = 0; i < numeric.size(); ++i) {
    const double d = double(analytic[i]) - numeric[i];
    num += d * d, den += numeric[i] * numeric[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

#define EXPECT_GRAD(analytic, numeric) \
  EXPECT_LT(rel_err(analytic, numeric), kTol) << #analytic " vs finite differences"

// ---------------------------------------------------------------------------------------------
// dense

void check_dense(bool bias, bool want_dx) {
  const DenseDims d{3, 5, 4};
  auto x = randv(d.n * d.in, 11), w = randv(d.out * d.in, 12), b = randv(d.out, 13),
       wy = randv(d.n * d.out, 14);
  std::vector<float> y(d.n * d.out);
  auto L = [&] {
    ref::dense_forward(d, x.data(), w.data(), bias ? b.data() : nullptr, y.data());
    return weighted_sum(wy, y);
  };
  const float kPoison = 12345.f;
  std::vector<float> dx(x.size(), kPoison), dw(w.size()), db(b.size(), kPoison);
  ref::dense_backward(d, x.data(), w.data(), wy.data(), want_dx ? dx.data() : nullptr, dw.data(),
                      bias ? db.data() : nullptr);
  if (want_dx)
    EXPECT_GRAD(dx, numeric_grad(x, 1e-2, L));
  else
    EXPECT_TRUE(std::all_of(dx.begin(), dx.end(), [&](float v) { return v == kPoison; }));
  EXPECT_GRAD(dw, numeric_grad(w, 1e-2, L));
  if (bias)
    EXPECT_GRAD(db, numeric_grad(b, 1e-2, L));
  else
    EXPECT_TRUE(std::all_of(db.begin(), db.end(), [&](float v) { return v == kPoison; }));
}

TEST(GradDense, WithBias) {
  check_dense(true, true);
}
TEST(GradDense, WithoutBias) {
  check_dense(false, true);
}
TEST(GradDense, NoInputGradient) {
  check_dense(true, false);
}  // the first layer: dx null

// ---------------------------------------------------------------------------------------------
// relu: inputs kept >= 0.05 away from the kink, eps 1e-2 never crosses it.

TEST(GradRelu, AwayFromZero) {
  auto x = randv(64, 21, -1.f, 1.f, 0.05f), wy = randv(64, 22);
  std::vector<float> y(x.size()), dx(x.size());
  auto L = [&] {
    ref::relu_forward(int64_t(x.size()), x.data(), y.data());
    return weighted_sum(wy, y);
  };
  L();  // the backward reads the forward's output
  ref::relu_backward(int64_t(x.size()), y.data(), wy.data(), dx.data());
  EXPECT_GRAD(dx, numeric_grad(x, 1e-2, L));
}

// ---------------------------------------------------------------------------------------------
// softmax cross-entropy: training minimises the batch mean, so grad_scale = 1/n and dlogits is
// d(sum of losses * grad_scale)/dz; metrics accumulate onto what they held.

TEST(GradSoftmaxCe, MeanLossGradient) {
  const int64_t n = 4, k = 5;
  auto z = randv(n * k, 31, -2.f, 2.f);
  const std::vector<int32_t> labels = {0, 3, 4, 1};
  const float scale = 1.f / float(n);
  auto L = [&] {
    float m[2] = {0, 0};
    ref::softmax_ce(n, k, z.data(), labels.data(), scale, nullptr, m);
    return double(m[0]) * scale;
  };
  std::vector<float> dz(z.size());
  float metrics[2] = {1.5f, 2.f};
  ref::softmax_ce(n, k, z.data(), labels.data(), scale, dz.data(), metrics);
  EXPECT_GRAD(dz, numeric_grad(z, 1e-2, L));

  // metrics: loss summed over the batch (by hand, in double), and the argmax hits, added.
  double loss = 0;
  int correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* r = z.data() + i * k;
    double s = 0;
    for (int64_t c = 0; c < k; ++c) s += std::exp(double(r[c]));
    loss += std::log(s) - r[labels[i]];
    correct += (std::max_element(r, r + k) - r) == labels[i];
  }
  EXPECT_NEAR(metrics[0], 1.5 + loss, 1e-5 * (1.5 + loss));
  EXPECT_EQ(metrics[1], 2.f + float(correct));
}

// ---------------------------------------------------------------------------------------------
// conv2d: backward data and backward weights against the forward, on a small odd-sized map.

struct ConvCase {
  const char* name;
  int64_t kernel, stride, pad;
};
void PrintTo(const ConvCase& c, std::ostream* os) {
  *os << c.name;
}

class GradConv2d : public ::testing::TestWithParam<ConvCase> {};

TEST_P(GradConv2d, DataAndWeights) {
  const ConvCase cc = GetParam();
  ConvDims d;
  d.n = 2, d.c = 3, d.h = d.w = 9, d.k = 4, d.r = d.s = cc.kernel, d.stride = cc.stride,
  d.pad = cc.pad;
  const uint32_t seed = uint32_t(40 + cc.kernel * 3 + cc.stride);
  auto x = randv(d.n * d.c * d.h * d.w, seed), w = randv(d.k * d.c * d.r * d.s, seed + 1),
       wy = randv(d.n * d.k * d.oh() * d.ow(), seed + 2);
  std::vector<float> y(wy.size()), dx(x.size()), dw(w.size());
  auto L = [&] {
    ref::conv2d_forward(d, x.data(), w.data(), y.data());
    return weighted_sum(wy, y);
  };
  ref::conv2d_backward_data(d, wy.data(), w.data(), dx.data());
  ref::conv2d_backward_weights(d, x.data(), wy.data(), dw.data());
  EXPECT_GRAD(dx, numeric_grad(x, 1e-2, L));
  EXPECT_GRAD(dw, numeric_grad(w, 1e-2, L));
}

INSTANTIATE_TEST_SUITE_P(GradRef, GradConv2d,
                         ::testing::Values(ConvCase{"k1s1", 1, 1, 0}, ConvCase{"k3s1p1", 3, 1, 1},
                                           ConvCase{"k3s2p1", 3, 2, 1},
                                           ConvCase{"k7s2p3", 7, 2, 3}),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------------
// batchnorm: the training backward goes through the batch statistics.

TEST(GradBatchnorm, TrainBackwardThroughBatchStats) {
  const BnDims d{2, 3, 5};
  const BnParams p{1e-5f, 0.1f};
  const int64_t total = d.n * d.c * d.hw;
  auto x = randv(total, 51, -1.f, 2.f), gamma = randv(d.c, 52, 0.5f, 1.5f), beta = randv(d.c, 53),
       wy = randv(total, 54);
  std::vector<float> y(total), sm(d.c), si(d.c), rm(d.c), rv(d.c, 1.f);
  auto L = [&] {
    ref::batchnorm_forward_train(d, p, x.data(), gamma.data(), beta.data(), y.data(), sm.data(),
                                 si.data(), rm.data(), rv.data());
    return weighted_sum(wy, y);
  };
  L();  // saves mean and invstd of the unperturbed x
  std::vector<float> dx(total), dgamma(d.c), dbeta(d.c);
  ref::batchnorm_backward(d, x.data(), wy.data(), gamma.data(), sm.data(), si.data(), dx.data(),
                          dgamma.data(), dbeta.data());
  EXPECT_GRAD(dx, numeric_grad(x, 1e-2, L));
  EXPECT_GRAD(dgamma, numeric_grad(gamma, 1e-2, L));
  EXPECT_GRAD(dbeta, numeric_grad(beta, 1e-2, L));
  // the backward's dx sums to zero per channel (the mean is subtracted): a structural check
  for (int64_t c = 0; c < d.c; ++c) {
    double s = 0;
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) s += dx[(n * d.c + c) * d.hw + i];
    EXPECT_NEAR(s, 0.0, 1e-5) << "channel " << c;
  }
}

TEST(GradBatchnorm, SavedStatsAndRunningUpdateByHand) {
  const BnDims d{3, 2, 4};
  const BnParams p{1e-3f, 0.2f};
  const int64_t total = d.n * d.c * d.hw;
  auto x = randv(total, 61, -1.f, 3.f), gamma = randv(d.c, 62, 0.5f, 1.5f), beta = randv(d.c, 63);
  std::vector<float> y(total), sm(d.c), si(d.c), rm = {0.3f, -0.2f}, rv = {1.5f, 0.7f};
  const auto rm0 = rm, rv0 = rv;
  ref::batchnorm_forward_train(d, p, x.data(), gamma.data(), beta.data(), y.data(), sm.data(),
                               si.data(), rm.data(), rv.data());
  const double m = double(d.n * d.hw);
  for (int64_t c = 0; c < d.c; ++c) {
    std::vector<double> v;
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) v.push_back(x[(n * d.c + c) * d.hw + i]);
    const double mean = std::accumulate(v.begin(), v.end(), 0.0) / m;
    double ss = 0;
    for (double t : v) ss += (t - mean) * (t - mean);
    const double biased = ss / m, unbiased = ss / (m - 1);
    EXPECT_NEAR(sm[c], mean, 1e-6);
    EXPECT_NEAR(si[c], 1.0 / std::sqrt(biased + p.eps), 1e-6 / std::sqrt(biased + p.eps));
    EXPECT_NEAR(rm[c], 0.8 * rm0[c] + 0.2 * mean, 1e-6);
    EXPECT_NEAR(rv[c], 0.8 * rv0[c] + 0.2 * unbiased, 1e-6);  // unbiased, as PyTorch
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t i = 0; i < d.hw; ++i) {
        const int64_t at = (n * d.c + c) * d.hw + i;
        EXPECT_NEAR(y[at], (x[at] - mean) / std::sqrt(biased + p.eps) * gamma[c] + beta[c], 1e-5);
      }
  }
}

TEST(GradBatchnorm, EvalUsesRunningStatsByHand) {
  const BnDims d{2, 3, 4};
  const BnParams p{1e-5f, 0.1f};
  const int64_t total = d.n * d.c * d.hw;
  auto x = randv(total, 71), gamma = randv(d.c, 72, 0.5f, 1.5f), beta = randv(d.c, 73),
       rm = randv(d.c, 74), rv = randv(d.c, 75, 0.5f, 2.f);
  std::vector<float> y(total);
  ref::batchnorm_forward_eval(d, p, x.data(), gamma.data(), beta.data(), rm.data(), rv.data(),
                              y.data());
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t c = 0; c < d.c; ++c)
      for (int64_t i = 0; i < d.hw; ++i) {
        const int64_t at = (n * d.c + c) * d.hw + i;
        const double want =
            (double(x[at]) - rm[c]) / std::sqrt(double(rv[c]) + p.eps) * gamma[c] + beta[c];
        EXPECT_NEAR(y[at], want, 1e-6);
      }
}

// ---------------------------------------------------------------------------------------------
// pools

TEST(GradMaxpool, K3S2P1DistinctValues) {
  for (int64_t hw : {7, 8}) {  // odd and even maps: the padded edge wins nothing in both
    SCOPED_TRACE("map " + std::to_string(hw));
    PoolDims d;
    d.n = 2, d.c = 2, d.h = d.w = hw, d.kernel = 3, d.stride = 2, d.pad = 1;
    // Distinct values 0.05 apart in a random order (some negative, so padding would show):
    // an eps of 1e-3 cannot change which element wins a window.
    const int64_t count = d.n * d.c * d.h * d.w;
    std::vector<float> x(count);
    std::vector<int> order(count);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(81 + hw));
    for (int64_t i = 0; i < count; ++i) x[i] = 0.05f * float(order[i] - count / 2) + 0.013f;
    auto wy = randv(d.n * d.c * d.oh() * d.ow(), 82);
    std::vector<float> y(wy.size()), dx(x.size());
    std::vector<int32_t> argmax(wy.size());
    auto L = [&] {
      ref::maxpool_forward(d, x.data(), y.data(), argmax.data());
      return weighted_sum(wy, y);
    };
    L();
    ref::maxpool_backward(d, wy.data(), argmax.data(), dx.data());
    EXPECT_GRAD(dx, numeric_grad(x, 1e-3, L));
  }
}

TEST(GradGlobalAvgpool, Backward) {
  const int64_t n = 2, c = 3, hw = 10;
  auto x = randv(n * c * hw, 91), wy = randv(n * c, 92);
  std::vector<float> y(n * c), dx(x.size());
  auto L = [&] {
    ref::global_avgpool_forward(n, c, hw, x.data(), y.data());
    return weighted_sum(wy, y);
  };
  ref::global_avgpool_backward(n, c, hw, wy.data(), dx.data());
  EXPECT_GRAD(dx, numeric_grad(x, 1e-2, L));
}

// add has no backward entry: the trainer copies dy into both inputs' gradients. Check that this
// is the gradient of the forward.
TEST(GradAdd, BothInputsGetDy) {
  auto a = randv(30, 101), b = randv(30, 102), wy = randv(30, 103);
  std::vector<float> y(30);
  auto L = [&] {
    ref::add_forward(int64_t(y.size()), a.data(), b.data(), y.data());
    return weighted_sum(wy, y);
  };
  EXPECT_GRAD(wy, numeric_grad(a, 1e-2, L));
  EXPECT_GRAD(wy, numeric_grad(b, 1e-2, L));
}

// ---------------------------------------------------------------------------------------------
// optimizers: two steps against the formulas written out by hand, in double.

TEST(GradOptimizer, AdamTwoStepsByHand) {
  AdamParams hp;
  hp.lr = 1e-2f, hp.beta1 = 0.9f, hp.beta2 = 0.99f, hp.eps = 1e-6f, hp.weight_decay = 0.05f;
  const int64_t n = 16;
  auto p = randv(n, 111), g1 = randv(n, 112), g2 = randv(n, 113);
  std::vector<float> m(n, 0.f), v(n, 0.f);
  const auto p0 = p;
  ref::adam_update(n, p.data(), g1.data(), m.data(), v.data(), hp, 1);
  const auto p1 = p;
  ref::adam_update(n, p.data(), g2.data(), m.data(), v.data(), hp, 2);
  const double b1 = hp.beta1, b2 = hp.beta2;
  for (int64_t i = 0; i < n; ++i) {
    // step 1 from zero moments: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps).
    const double ga = g1[i] + hp.weight_decay * double(p0[i]);
    const double want1 = p0[i] - hp.lr * ga / (std::fabs(ga) + hp.eps);
    EXPECT_NEAR(p1[i], want1, 2e-7) << i;
    // step 2: m = b1 (1-b1) ga + (1-b1) gb, v likewise with squares, corrected by 1 - b^2.
    const double gb = g2[i] + hp.weight_decay * double(p1[i]);
    const double m2 = b1 * (1 - b1) * ga + (1 - b1) * gb;
    const double v2 = b2 * (1 - b2) * ga * ga + (1 - b2) * gb * gb;
    const double want2 =
        p1[i] - hp.lr * (m2 / (1 - b1 * b1)) / (std::sqrt(v2 / (1 - b2 * b2)) + hp.eps);
    EXPECT_NEAR(m[i], m2, 1e-6) << i;
    EXPECT_NEAR(v[i], v2, 1e-7) << i;
    EXPECT_NEAR(p[i], want2, 2e-7) << i;
  }
}

struct SgdCase {
  const char* name;
  float momentum, weight_decay;
  bool nesterov;
};
void PrintTo(const SgdCase& c, std::ostream* os) {
  *os << c.name;
}

class GradSgd : public ::testing::TestWithParam<SgdCase> {};

TEST_P(GradSgd, TwoStepsByHand) {
  const SgdCase sc = GetParam();
  SgdParams hp;
  hp.lr = 0.1f, hp.momentum = sc.momentum, hp.weight_decay = sc.weight_decay,
  hp.nesterov = sc.nesterov;
  const int64_t n = 16;
  auto p = randv(n, 121), g1 = randv(n, 122), g2 = randv(n, 123);
  std::vector<float> buf(n, 0.f);
  const auto p0 = p;
  ref::sgd_update(n, p.data(), g1.data(), buf.data(), hp);
  const auto p1 = p;
  ref::sgd_update(n, p.data(), g2.data(), buf.data(), hp);
  const double mu = sc.momentum, wd = sc.weight_decay, lr = hp.lr;
  for (int64_t i = 0; i < n; ++i) {
    const double ga = g1[i] + wd * p0[i];
    // step 1: buf = ga; the step is ga (plain, no momentum) or ga + mu * ga (Nesterov)
    const double step1 = mu == 0 ? ga : sc.nesterov ? ga + mu * ga : ga;
    EXPECT_NEAR(p1[i], p0[i] - lr * step1, 1e-6) << i;
    const double gb = g2[i] + wd * p1[i];
    const double buf2 = mu * ga + gb;
    const double step2 = mu == 0 ? gb : sc.nesterov ? gb + mu * buf2 : buf2;
    EXPECT_NEAR(p[i], p1[i] - lr * step2, 1e-6) << i;
    if (mu != 0) {
      EXPECT_NEAR(buf[i], buf2, 1e-6) << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(GradRef, GradSgd,
                         ::testing::Values(SgdCase{"plain", 0.f, 0.f, false},
                                           SgdCase{"momentum", 0.9f, 0.f, false},
                                           SgdCase{"momentum_wd", 0.9f, 5e-4f, false},
                                           SgdCase{"nesterov_wd", 0.9f, 5e-4f, true}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace tb
