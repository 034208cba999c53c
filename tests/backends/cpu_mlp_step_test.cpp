// The CPU backend's fused MLP step (backends/cpu/mlp_step.cpp) against ref::mlp_step, the ops it
// fuses composed on the host, and through the executor against the issued ops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../test_util.h"
#include "../train/parameter_moves.h"
#include "../train/synthetic_data.h"
#include "backends/backend.h"
#include "models/model.h"
#include "ops/mlp_step.h"
#include "train/executor.h"
#include "train/runner.h"
#include "train/workload.h"

namespace tb {
namespace {

using testing::rel_err;
using testing::uniform;

// GEMMs over K up to 784 in oneDNN's blocked order against the reference's sums: the bound of
// the op tests' GEMM cases. Adam then carries the products' differences into m, v and the
// parameters, at most as large relatively.
constexpr double kTol = 1e-5;

struct Shape {
  int threads;
  int64_t hidden, n;
};

// Three steps (Adam's count 1..3 from the cursor, which moves between them) at fashion-mlp's
// sizes and at sizes that split unevenly: 40 hidden units over two threads (slices 16 and 24,
// the second a part block), a batch of 7 (rows 3 and 4), one thread, three (slices 32, 48, 48).
// Every output, the gradients, Adam's state and the parameters compared; outputs start as NaN, so
// one left unwritten fails.
TEST(CpuMlpStep, MatchesReference) {
  const int64_t in = 784, classes = 10, count = 100;
  const testing::MlpStepSource src = testing::mlp_step_source(count, in, classes, 2700);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const Shape sh : {Shape{2, 128, 32}, Shape{2, 128, 7}, Shape{2, 40, 32}, Shape{1, 128, 32},
                         Shape{2, 48, 5}, Shape{3, 128, 32}}) {
    SCOPED_TRACE("threads " + std::to_string(sh.threads) + ", hidden " + std::to_string(sh.hidden) +
                 ", batch " + std::to_string(sh.n));
    BackendConfig cfg;
    cfg.threads = sh.threads;
    auto be = make_backend(cfg);
    ASSERT_NE(be->mlp_step, nullptr);
    const int64_t n = sh.n, hidden = sh.hidden;
    const size_t P = size_t(hidden * in + hidden + classes * hidden + classes);
    const std::vector<float> p0 = uniform(P, 2701, -0.05f, 0.05f);
    struct Side {
      std::vector<float> params, grads, m, v, h, dh, z, dz, metrics;
      std::vector<int32_t> y;
      StepCursor at;
      MlpStep s;
    } want, got;
    for (Side* side : {&want, &got}) {
      Side& d = *side;
      d.params = p0, d.m.assign(P, 0.f), d.v.assign(P, 0.f), d.grads.assign(P, nan);
      d.h.assign(size_t(n * hidden), nan), d.dh = d.h;
      d.z.assign(size_t(n * classes), nan), d.dz = d.z;
      d.metrics.assign(2, 0.f), d.y.assign(size_t(n), -1);
      d.at.stride = n, d.at.count = count, d.at.epoch = 1, d.at.seed = 5;
      MlpStep& s = d.s;
      s.batch.n = n, s.batch.channels = 1, s.batch.height = s.batch.width = 28;
      s.batch.mean[0] = 0.2860f, s.batch.inv_std[0] = 1.f / 0.3530f;
      s.batch.cursor = &d.at;
      s.images = src.images.data(), s.labels = src.labels.data(), s.indices = src.order.data();
      s.in = in, s.hidden = hidden, s.classes = classes;
      s.params = d.params.data(), s.grads = d.grads.data(), s.m = d.m.data(), s.v = d.v.data();
      s.h = d.h.data(), s.dh = d.dh.data(), s.logits = d.z.data(), s.dlogits = d.dz.data();
      s.y = d.y.data(), s.metrics = d.metrics.data();
    }
    for (int step = 0; step < 3; ++step) {
      ref::mlp_step(want.s);
      ASSERT_TRUE(be->mlp_step(be->ctx, got.s));
      advance(want.at), advance(got.at);
    }
    EXPECT_EQ(got.y, want.y) << "labels";
    EXPECT_LE(rel_err(got.h, want.h), kTol) << "h";
    EXPECT_LE(rel_err(got.z, want.z), kTol) << "logits";
    EXPECT_LE(rel_err(got.dz, want.dz), kTol) << "dlogits";
    EXPECT_LE(rel_err(got.dh, want.dh), kTol) << "dh";
    EXPECT_LE(rel_err(got.grads, want.grads), kTol) << "gradients";
    EXPECT_LE(rel_err(got.m, want.m), kTol) << "Adam m";
    EXPECT_LE(rel_err(got.v, want.v), kTol) << "Adam v";
    EXPECT_LE(rel_err(got.params, want.params), kTol) << "parameters";
    EXPECT_NEAR(got.metrics[0], want.metrics[0], 1e-5 * want.metrics[0]) << "loss sum";
    EXPECT_EQ(got.metrics[1], want.metrics[1]) << "correct count";
    // The parameters moved, so the comparison above compared something.
    EXPECT_GT(rel_err(got.params, p0), 1e-3);
  }
}

// bf16 runs the layers op by op: the table offers no fused step there.
TEST(CpuMlpStep, OfferedForFp32Only) {
  BackendConfig cfg;
  EXPECT_NE(make_backend(cfg)->mlp_step, nullptr);
  cfg.precision = Precision::bf16;
  std::unique_ptr<Backend> bf16;
  try {
    bf16 = make_backend(cfg);
  } catch (const Error&) {
    GTEST_SKIP() << "no bf16 kernels on this CPU";
  }
  EXPECT_EQ(bf16->mlp_step, nullptr);
}

// Through the executor: fashion-mlp's model on one-channel data, two epochs with a partial last
// batch (32 32 32 4: two shapes of the fused step), deterministic and on two threads. The fused
// step ran, and the parameters moved as the issued ops (the reference backend's) moved them.
TEST(CpuMlpStep, FollowsIssuedOps) {
  const DatasetPair data = testing::synthetic(100, 1, 28, 28, 2702);
  const Model m = build_mlp(1, 28, 28, {128}, 10);
  const Workload& w = find_workload("fashion-mlp");
  Hyper hp = w.defaults;
  hp.batch = 32, hp.epochs = 2;
  std::vector<float> moved[2];
  for (int fused = 0; fused < 2; ++fused) {
    BackendConfig cfg;
    cfg.threads = 2, cfg.deterministic = true, cfg.reference = fused == 0;
    auto be = make_backend(cfg);
    Executor t(m, *be, hp, w, data);
    EXPECT_EQ(t.plan().mlp.fits, fused == 1);
    moved[fused] = testing::parameter_moves(t);
    EXPECT_EQ(t.fused_mlp_taken(), fused == 1);
  }
  const double e = rel_err(moved[1], moved[0]);
  EXPECT_LE(e, 1e-3) << "parameter moves, fused step vs issued ops";
  std::printf("CPU fused MLP step vs the reference's issued ops: parameter moves %.2e apart\n", e);
}

}  // namespace
}  // namespace tb
