// Data-parallel ranks, in the test binary itself started by mpiexec (ctest's RanksUnderMpiexec,
// tests/CMakeLists: `mpiexec -np 2 trainbench_tests --gtest_filter='Ranks.*'`). Each rank also
// trains the same model alone on the whole batch, so the ranks' trajectory and the single
// process's compare inside one process. Without a launcher every test here skips.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "../models/tiny_resnet.h"
#include "../train/synthetic_data.h"
#include "comm/comm.h"
#include "train/checkpoint.h"
#include "train/executor.h"
#include "train/runner.h"

namespace tb {
namespace {

Comm* world() {
  static const std::unique_ptr<Comm> comm = launcher_world_size() > 1 ? make_comm() : nullptr;
  return comm.get();
}

#define SKIP_WITHOUT_RANKS()                                           \
  Comm* comm = world();                                                \
  if (!comm) GTEST_SKIP() << "needs mpiexec -np 2 (ctest runs it so)"; \
  static_assert(true)

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float d = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

// Whether every rank holds rank 0's parameters to the bit (true on every rank, or false on all).
bool same_on_every_rank(Comm& comm, const std::vector<float>& p) {
  std::vector<float> root = p;
  comm.broadcast(root.data(), root.size() * sizeof(float));
  return !comm.any(root != p);
}

std::unique_ptr<Backend> one_thread_backend() {
  BackendConfig cfg{DeviceKind::cpu, 0, Precision::fp32, 1, false};
  cfg.deterministic = true;
  // The ops issued one by one, as under ranks (where the fused MLP step cannot run): the runs
  // compared then differ only in how the gradients are summed.
  cfg.cpu_fused_mlp = false;
  return make_backend(cfg);
}

// fashion-mlp at global batch 32 over 300 steps of an epoch of 993 images: 31 batches of 32 and
// a last one of 1, which one rank sits out (its gradients count zero). A gradient the shards sum
// or weigh wrongly moves the weights far above 1e-6 within a few steps (SGD: any scale; Adam:
// the shards' shares, as in the last batch); rounding (a GEMM over 16 rows then a sum of two,
// against one over 32) stays below it.
TEST(Ranks, MlpFollowsTheSingleProcessTrajectory) {
  SKIP_WITHOUT_RANKS();
  const DatasetPair data = testing::synthetic(993, 1, 28, 28, 7);
  const Workload& w = find_workload("fashion-mlp");
  const Model m = build_mlp(1, 28, 28, {128}, 10);
  // Adam with one allreduce after backward; SGD with buckets of 4 KiB: the output layer's
  // gradients (5,160 bytes) go while the hidden layer's backward runs.
  for (int64_t bucket_bytes : {int64_t(0), int64_t(4) << 10}) {
    SCOPED_TRACE(bucket_bytes);
    Hyper hp = w.defaults;
    hp.batch = 32, hp.epochs = 20, hp.steps = 300;
    if (bucket_bytes) hp.optimizer = "sgd", hp.sgd.lr = 0.05f, hp.sgd.momentum = 0.9f;
    auto be_alone = one_thread_backend();
    Executor alone(m, *be_alone, hp, w, data);
    const TrainResult r_alone = train(alone, nullptr);
    auto be = one_thread_backend();
    Executor ranked(m, *be, hp, w, data, ExecutorUse::train, {comm, bucket_bytes});
    const TrainResult r = train(ranked, nullptr);
    EXPECT_EQ(r.steps, 300);
    EXPECT_EQ(r.images, r_alone.images);
    const std::vector<float> p = ranked.download_params();
    EXPECT_LT(max_abs_diff(p, alone.download_params()), 1e-6f);
    EXPECT_TRUE(same_on_every_rank(*comm, p));
    // The epoch's figures are all ranks' (each rank summed only its shards).
    ASSERT_EQ(r.epochs.size(), r_alone.epochs.size());
    for (size_t e = 0; e < r.epochs.size(); ++e) {
      EXPECT_NEAR(r.epochs[e].loss, r_alone.epochs[e].loss, 1e-5 * r_alone.epochs[e].loss);
      EXPECT_NEAR(r.epochs[e].accuracy, r_alone.epochs[e].accuracy, 1.5 / 993);
    }
    const ExchangeStats& x = ranked.exchange_stats();
    EXPECT_EQ(x.steps, 300);
    EXPECT_EQ(x.buckets, bucket_bytes ? 2 * 300 : 300);
  }
}

// A checkpoint written by one process, resumed on two ranks (rank 0's state broadcast), ends
// where the straight single-process run does.
TEST(Ranks, ResumeOnAnotherRankCount) {
  SKIP_WITHOUT_RANKS();
  const DatasetPair data = testing::synthetic(200, 1, 8, 8, 9);  // 6 batches of 32 and one of 8
  const Workload& w = find_workload("fashion-mlp");
  const Model m = build_mlp(1, 8, 8, {32}, 10);
  Hyper hp = w.defaults;
  hp.batch = 32, hp.epochs = 10, hp.steps = 40;
  auto be_alone = one_thread_backend();
  Executor straight(m, *be_alone, hp, w, data);
  train(straight, nullptr);
  Hyper first_hp = hp;
  first_hp.steps = 17;  // stops inside the third epoch
  Executor first(m, *be_alone, first_hp, w, data);
  Checkpoint saved;
  CheckpointPlan writes;
  writes.write = [&](const Checkpoint& c) { return saved = c, true; };
  train(first, nullptr, writes);
  ASSERT_EQ(saved.epoch_so_far.steps, 3);
  auto be = one_thread_backend();
  Executor ranked(m, *be, hp, w, data, ExecutorUse::train, {comm, 0});
  if (comm->rank() != 0)  // only rank 0's arrays count: the others' are overwritten
    for (float& v : saved.params) v = 0;
  CheckpointPlan resumes;
  resumes.resume = &saved, resumes.resume_path = "saved";
  const TrainResult r = train(ranked, nullptr, resumes);
  EXPECT_EQ(r.steps, 40 - 17);
  EXPECT_LT(max_abs_diff(ranked.download_params(), straight.download_params()), 1e-6f);
}

// The toy ResNet (batch norm: statistics per rank, so not the single process's numbers) learns
// on two ranks, and the ranks stay on the same weights.
TEST(Ranks, ToyResNetTrains) {
  SKIP_WITHOUT_RANKS();
  const DatasetPair data = testing::synthetic(96, 3, 16, 16, 11);
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = 16, hp.epochs = 4, hp.adam.lr = 3e-3f;
  const Model m = testing::tiny_resnet();
  auto be = one_thread_backend();
  Executor ranked(m, *be, hp, w, data, ExecutorUse::train, {comm, int64_t(16) << 10});
  const TrainResult r = train(ranked, nullptr);
  ASSERT_EQ(r.epochs.size(), 4u);
  EXPECT_LT(r.epochs.back().loss, 0.7 * r.epochs.front().loss);
  EXPECT_TRUE(same_on_every_rank(*comm, ranked.download_params()));
  EXPECT_GT(ranked.exchange_stats().buckets, r.steps);  // several buckets a step
}

}  // namespace
}  // namespace tb
