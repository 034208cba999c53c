// The training loop: the oneDNN backend follows the reference backend step for step; real
// Fashion-MNIST learns; the record holds what WORKLOADS.md asks for.
#include "train/executor.h"
#include "train/arena.h"
#include "train/checkpoint.h"
#include "train/runner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <utility>

#include "../backends/bf16_reference.h"
#include "../models/tiny_resnet.h"
#include "../test_util.h"
#include "backends/cpu/cpu_context.h"
#include "core/error.h"
#include "data/cifar.h"
#include "data/idx.h"
#include "recording_backend.h"
#include "report/record.h"
#include "synthetic_data.h"
#include "train/checkpoint.h"

namespace tb {

using testing::rel_err;
using testing::synthetic;
using testing::tiny_resnet;

TEST(Executor, OneDnnFollowsReferenceOnMlp) {
  DatasetPair data = synthetic(100, 1, 8, 8, 1);
  Workload w = find_workload("fashion-mlp");
  Hyper hp = w.defaults;
  hp.batch = 16, hp.epochs = 2, hp.steps = 9;  // 7 steps an epoch (the last one of 4), then 2
  // Two hidden layers: the oneDNN ops issued one by one (one hidden layer would run as the CPU's
  // fused MLP step, which tests/backends/cpu_mlp_step_test.cpp checks).
  Model m = build_mlp(1, 8, 8, {32, 16}, 10);
  auto ref_backend = make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, true});
  auto cpu_backend = make_backend({DeviceKind::cpu, 0, Precision::fp32, 2, false});
  Executor a(m, *ref_backend, hp, w, data), b(m, *cpu_backend, hp, w, data);
  ASSERT_EQ(a.download_params(), b.download_params());  // same seed, same init
  TrainResult ra = train(a, nullptr), rb = train(b, nullptr);
  EXPECT_EQ(ra.steps, 9);
  EXPECT_TRUE(ra.stopped_by_steps);
  // A short run still samples the step split: period 9/2 = 4, split at steps 2 and 6, host
  // overhead at steps 4 and 8. Step 6 is the epoch's last batch, of 4: the first step at that
  // size makes its ops' plans, so it runs untimed and is no sample.
  EXPECT_EQ(rb.split.samples, 1);
  EXPECT_EQ(rb.split.host_samples, 2);
  EXPECT_GT(rb.split.forward_ms, 0);
  EXPECT_LT(rel_err(b.download_params(), a.download_params()), 1e-5f);
  EXPECT_NEAR(ra.epochs[0].loss, rb.epochs[0].loss, 1e-4);
}

TEST(Executor, PartialLastBatchAndLossFalls) {
  DatasetPair data = synthetic(90, 1, 6, 6, 2);  // 90 = 2 x 32 + 26
  Workload w = find_workload("fashion-mlp");
  Hyper hp = w.defaults;
  hp.batch = 32, hp.epochs = 15, hp.adam.lr = 0.01f;
  Model m = build_mlp(1, 6, 6, {16}, 10);
  auto be = make_backend({DeviceKind::cpu, 0, Precision::fp32, 2, false});
  Executor t(m, *be, hp, w, data);
  TrainResult r = train(t, nullptr);
  ASSERT_EQ(r.epochs.size(), 15u);
  EXPECT_EQ(r.epochs[0].steps, 3);
  EXPECT_EQ(r.epochs[0].images, 90);
  EXPECT_LT(r.epochs.back().loss, 0.5 * r.epochs.front().loss);
  EvalResult e = t.evaluate();
  EXPECT_EQ(e.images, 90);
  EXPECT_GT(e.accuracy, 0.9);
}

TEST(Executor, SgdNesterovTrains) {
  DatasetPair data = synthetic(64, 1, 6, 6, 3);
  Workload w = find_workload("fashion-mlp");
  Hyper hp = w.defaults;
  hp.optimizer = "sgd", hp.sgd.lr = 0.05f, hp.sgd.nesterov = true, hp.sgd.weight_decay = 1e-4f;
  hp.batch = 16, hp.epochs = 6;
  Model m = build_mlp(1, 6, 6, {16}, 10);
  auto be = make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, false});
  Executor t(m, *be, hp, w, data);
  TrainResult r = train(t, nullptr);
  EXPECT_LT(r.epochs.back().loss, 0.7 * r.epochs.front().loss);
}

// --deterministic: no convolution algorithm is chosen by timing, so two runs of a small ResNet
// (1x1 convolutions on 4x4 and 2x2 maps, where the CPU would otherwise time two candidates, or
// three under bf16) end with the same parameters to the bit, in fp32 and (where the CPU has it)
// bf16, and every convolution ran its first candidate.
TEST(Executor, DeterministicRunsRepeatExactly) {
  DatasetPair data = synthetic(48, 3, 16, 16, 5);
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = 16, hp.epochs = 1;
  const Model m = tiny_resnet();
  std::vector<Precision> precisions = {Precision::fp32};
  if (cpu::cpu_has_bf16_kernels()) precisions.push_back(Precision::bf16);
  for (Precision prec : precisions) {
    SCOPED_TRACE(precision_name(prec));
    BackendConfig cfg{DeviceKind::cpu, 0, prec, 2, false};
    cfg.deterministic = true;
    std::vector<float> params[2];
    for (auto& p : params) {
      auto be = make_backend(cfg);
      Executor t(m, *be, hp, w, data);
      train(t, nullptr);
      p = t.download_params();
      int convs = 0;
      const std::vector<std::string> notes = t.node_notes();
      for (size_t i = 0; i < notes.size(); ++i) {
        if (notes[i].empty()) continue;
        EXPECT_EQ(notes[i].find("channels"), std::string::npos)
            << m.nodes[i].name << ": " << notes[i];
        convs++;
      }
      EXPECT_EQ(convs, 17);  // stem + 4 blocks x 3 + 4 projections
    }
    EXPECT_EQ(params[0], params[1]);
  }
}

// Graphs: the whole training step (data cut, forward, loss, backward, optimizer update) recorded
// once per batch size and replayed (CUDA graphs on a GPU; here the recording backend, which bakes
// every argument in as CUDA does). Each run must end with the same parameters to the bit as the
// same run issuing every op, across a partial last batch (a second graph), epochs (a new
// permutation), augmentation seeds, Adam's step count and sampled steps.
struct GraphRun {
  std::vector<float> params;
  TrainResult result;
  EvalResult eval;
  std::string summary;
  int recorded = 0, launched = 0;
};

static GraphRun run_graphed(const Model& m, const Hyper& hp, const DatasetPair& data,
                            const BackendConfig& cfg, bool graphs, bool fail_recordings = false) {
  std::unique_ptr<Backend> be = make_backend(cfg);
  if (graphs) {
    be = testing::make_recording_backend(std::move(be));
    testing::recorder(be->ctx).fail_recordings = fail_recordings;
  }
  GraphRun r;
  {
    Executor t(m, *be, hp, find_workload("fashion-mlp"), data);
    r.result = train(t, nullptr);
    r.eval = t.evaluate();
    r.params = t.download_params();
    r.summary = t.graph_summary();
  }
  if (graphs)
    r.recorded = testing::recorder(be->ctx).recorded,
    r.launched = testing::recorder(be->ctx).launched;
  return r;
}

// The toy ResNet's two epochs on oneDNN with --deterministic: 40 images = 16 + 16 + 8.
struct ToyResNetRun {
  DatasetPair data = synthetic(40, 3, 16, 16, 8);
  Hyper hp = find_workload("resnet50-cifar10").defaults;
  Model m = tiny_resnet();
  BackendConfig cfg{DeviceKind::cpu, 0, Precision::fp32, 2, false};
  ToyResNetRun() {
    hp.batch = 16, hp.epochs = 2, hp.augment = true;
    cfg.deterministic = true;
  }
  GraphRun run(bool graphs) const { return run_graphed(m, hp, data, cfg, graphs); }
};

// The CPU's NHWC plan trains the toy ResNet as its NCHW plan does: the same ops on transposed
// maps, summed in other orders (so close, not equal), the same test pass.
TEST(Executor, NhwcTrainsAsNchw) {
  ToyResNetRun toy;
  const GraphRun nhwc = toy.run(false);
  toy.cfg.cpu_nhwc = false;
  const GraphRun nchw = toy.run(false);
  ASSERT_EQ(nhwc.params.size(), nchw.params.size());
  EXPECT_LT(testing::rel_err(nhwc.params.data(), nchw.params.data(), nhwc.params.size()), 1e-4);
  EXPECT_NEAR(nhwc.result.epochs.back().loss, nchw.result.epochs.back().loss,
              1e-4 * nchw.result.epochs.back().loss);
  EXPECT_NEAR(nhwc.eval.loss, nchw.eval.loss, 1e-4 * nchw.eval.loss);
  EXPECT_NE(nhwc.params, nchw.params);  // the two plans did differ: NHWC ran
}

TEST(Executor, GraphReplayMatchesIssuedStepsOnMlp) {
  DatasetPair data = synthetic(90, 1, 6, 6, 7);  // 90 = 2 x 32 + 26: two batch sizes
  Hyper hp = find_workload("fashion-mlp").defaults;
  hp.batch = 32, hp.epochs = 3, hp.augment = false;
  Model m = build_mlp(1, 6, 6, {16}, 10);
  const BackendConfig ref{DeviceKind::cpu, 0, Precision::fp32, 1, true};
  const GraphRun plain = run_graphed(m, hp, data, ref, false);
  const GraphRun graphed = run_graphed(m, hp, data, ref, true);
  // 9 steps, sizes 32 32 26 | 32 32 26 | 32 32 26; period 4: sampled (issued) steps 2 and 6.
  // Issued: step 0 (first of 32), step 2 (first of 26, sampled), step 6 (sampled). Step 1 records
  // the 32 graph, step 5 the 26 one; steps 1 3 4 5 7 8 replay. The test pass (32 32 26) issues
  // its first 32, records and replays its second, issues its 26.
  EXPECT_EQ(graphed.recorded, 3);
  EXPECT_EQ(graphed.launched, 7);
  EXPECT_EQ(graphed.summary,
            "on: 6 steps replayed from 2 graph(s), batch 26, 32; test pass: 1 batches replayed");
  EXPECT_EQ(plain.summary, "off (the backend records no graphs)");
  EXPECT_EQ(graphed.params, plain.params);
  EXPECT_EQ(graphed.result.epochs.back().loss, plain.result.epochs.back().loss);
  EXPECT_EQ(graphed.eval.accuracy, plain.eval.accuracy);
  EXPECT_EQ(graphed.eval.loss, plain.eval.loss);
}

// The test pass cuts its batches where its own cursor stands (so a recorded batch replays): the
// same batches, in order, as cutting test_indices + first by hand, to the bit.
TEST(Executor, EvaluationCursorCutsTheTestSetInOrder) {
  DatasetPair data = synthetic(90, 1, 6, 6, 13);  // 32 32 26
  Hyper hp = find_workload("fashion-mlp").defaults;
  hp.batch = 32, hp.epochs = 1;
  const Model m = build_mlp(1, 6, 6, {16}, 10);
  auto be = make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, true});
  Executor t(m, *be, hp, find_workload("fashion-mlp"), data);
  train(t, nullptr);
  const EvalResult got = t.evaluate();
  be->fill(be->ctx, t.buffers().metrics + 2, 0.f, 2);
  const int last = int(m.nodes.size()) - 1;
  for (int64_t first = 0; first < 90; first += 32) {
    const int64_t n = std::min<int64_t>(32, 90 - first);
    t.load_batch(t.test_spec(), t.buffers().test_images, t.buffers().test_labels,
                 t.buffers().test_indices + first, n, 0);
    t.forward(n, false);
    be->softmax_ce(be->ctx, n, m.classes, t.buffers().out[size_t(last)], t.buffers().labels, 1.f,
                   nullptr, t.buffers().metrics + 2);
  }
  float host[4];
  be->download(be->ctx, host, t.buffers().metrics, sizeof(host));
  EXPECT_EQ(got.loss, host[2] / 90.0);
  EXPECT_EQ(got.accuracy, host[3] / 90.0);
}

// The same on a small ResNet through oneDNN with --deterministic: fused BN+ReLU, residual adds
// (shared gradient buffers), convolutions whose scratch reuse depends on call order, augmentation.
TEST(Executor, GraphReplayMatchesIssuedStepsOnResNet) {
  const ToyResNetRun toy;
  const GraphRun plain = toy.run(false);
  const GraphRun graphed = toy.run(true);
  EXPECT_EQ(graphed.recorded, 3);  // steps of 16 and 8, the test pass's 16
  EXPECT_GT(graphed.launched, 0);
  EXPECT_EQ(graphed.params, plain.params);
  EXPECT_EQ(graphed.eval.loss, plain.eval.loss);
  EXPECT_EQ(graphed.eval.accuracy, plain.eval.accuracy);
}

// Once recorded, a step issues nothing but the graph's launch: what changes from step to step
// the graph reads from the cursor on the device and advances there, to where the issued steps
// would have left it.
// A small MLP on 6x6 images with the reference backend under the recording backend.
struct RecordedMlp {
  DatasetPair data;
  const Workload& w = find_workload("fashion-mlp");
  Hyper hp = w.defaults;
  Model m = build_mlp(1, 6, 6, {16}, 10);
  std::unique_ptr<Backend> be =
      testing::make_recording_backend(make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, true}));
  const testing::Recorder& rec = testing::recorder(be->ctx);
  RecordedMlp(int images, int64_t batch, uint64_t seed) : data(synthetic(images, 1, 6, 6, seed)) {
    hp.batch = batch;
  }
};

TEST(Executor, ReplayedStepIssuesOnlyTheGraphLaunch) {
  RecordedMlp run(7 * 32, 32, 10);
  const testing::Recorder& rec = run.rec;
  Backend* be = run.be.get();
  Executor t(run.m, *be, run.hp, run.w, run.data);
  t.step(32, nullptr);  // issued: makes the caches
  t.step(32, nullptr);  // recorded, then launched
  EXPECT_EQ(rec.recorded, 1);
  const int64_t issued = rec.issued, uploads = rec.uploads;
  for (int k = 0; k < 5; ++k) t.step(32, nullptr);
  EXPECT_EQ(rec.issued, issued) << "a replayed step issued ops outside its graph";
  EXPECT_EQ(rec.uploads, uploads) << "a replayed step uploaded";
  EXPECT_EQ(rec.launched, 6);
  StepCursor c;
  be->download(be->ctx, &c, t.buffers().cursor, sizeof(c));
  EXPECT_EQ(c.step, 7);
  EXPECT_EQ(c.updates, 7);
}

// A fused MLP step (Backend::mlp_step; here ref::mlp_step, offered by the recording backend) in
// place of the nine ops it fuses: the same run, with graphs, two batch sizes and epochs, ends with
// the same parameters and losses to the bit, since the reference composes the same ops in the
// same order. This checks what the Executor hands the fused step (which buffer is which, the
// cursor, the advance after it), which a backend's own step is then checked against on its device.
TEST(Executor, FusedMlpStepMatchesIssuedOps) {
  std::vector<float> params[2], buffers[2];
  double loss[2] = {0, 0};
  for (int fused = 0; fused < 2; ++fused) {
    RecordedMlp run(90, 32, 12);  // 32 32 26 a epoch
    run.hp.epochs = 3;
    testing::recorder(run.be->ctx).fused_mlp = fused == 1;
    Executor t(run.m, *run.be, run.hp, run.w, run.data);
    EXPECT_TRUE(t.plan().mlp.fits);
    loss[fused] = train(t, nullptr).epochs.back().loss;
    params[fused] = t.download_params();
    // The last step's h, logits, their gradient and the gradient at the ReLU's input: the
    // buffers the separate ops write, so anything reading them after a step reads the same.
    const int64_t n = 26, sizes[4] = {n * 16, n * 10, n * 10, n * 16};
    const float* bufs[4] = {t.buffers().out[2], t.buffers().out[3], t.buffers().grad[3],
                            t.buffers().grad[1]};
    for (int k = 0; k < 4; ++k) {
      std::vector<float> b(size_t(sizes[k]));
      run.be->download(run.be->ctx, b.data(), bufs[k], b.size() * sizeof(float));
      buffers[fused].insert(buffers[fused].end(), b.begin(), b.end());
    }
    if (fused) {
      EXPECT_GT(run.rec.fused, 0) << "the fused step never ran";
      EXPECT_GT(run.rec.launched, 0) << "no graph was replayed";
    }
  }
  EXPECT_EQ(params[1], params[0]);
  EXPECT_EQ(loss[1], loss[0]);
  EXPECT_EQ(buffers[1], buffers[0]);
}

// A backend that keeps a copy derived from the parameters (CUDA bf16's mirror) learns where the
// array is once its values are in place, and that it goes away before the arena is freed.
TEST(Executor, RegistersItsParameterArrayAndLetsGo) {
  RecordedMlp run(32, 16, 11);
  const testing::Recorder& rec = run.rec;
  {
    Executor t(run.m, *run.be, run.hp, run.w, run.data);
    EXPECT_EQ(rec.param_array, t.buffers().params);
    EXPECT_EQ(rec.param_count, run.m.param_count);
    EXPECT_EQ(rec.param_values, t.download_params()) << "registered before its values were in";
    {
      // A second run on the same backend registers its own array; the first one's ending must
      // not let go of it (it names the array it lets go of).
      auto second = std::make_unique<Executor>(run.m, *run.be, run.hp, run.w, run.data);
      EXPECT_EQ(rec.param_array, second->buffers().params);
      Executor third(run.m, *run.be, run.hp, run.w, run.data);
      second.reset();
      EXPECT_EQ(rec.param_array, third.buffers().params) << "a run let go of another run's array";
    }
  }
  EXPECT_EQ(rec.param_array, nullptr);
  EXPECT_EQ(rec.param_count, 0);
}

// A recording that fails leaves the run issuing every op, with the same numbers, and says why.
TEST(Executor, GraphRecordingFailureFallsBackToIssuedSteps) {
  DatasetPair data = synthetic(64, 1, 6, 6, 9);
  Hyper hp = find_workload("fashion-mlp").defaults;
  hp.batch = 16, hp.epochs = 2;
  Model m = build_mlp(1, 6, 6, {16}, 10);
  const BackendConfig ref{DeviceKind::cpu, 0, Precision::fp32, 1, true};
  const GraphRun plain = run_graphed(m, hp, data, ref, false);
  const GraphRun failed = run_graphed(m, hp, data, ref, true, true);
  EXPECT_EQ(failed.recorded, 0);
  EXPECT_EQ(failed.launched, 0);
  EXPECT_NE(failed.summary.find("off (recording failed: recording backend: this recording was "
                                "made to fail"),
            std::string::npos)
      << failed.summary;
  EXPECT_EQ(failed.params, plain.params);
}

// Profiling with device timers: each node's forward and backward time comes from the pair of
// marks around it. The MLP's ReLU runs inside the dense layer's forward (fused), so its forward
// gets no time and the dense layer's does; every node that ran gets time of its own.
TEST(Executor, TimerMarksLandOnTheirNodes) {
  DatasetPair data = synthetic(64, 1, 8, 8, 10);
  Hyper hp = find_workload("fashion-mlp").defaults;
  hp.batch = 32;
  const Model m = build_mlp(1, 8, 8, {64}, 10);  // input dense1 relu1 dense2
  ASSERT_EQ(m.nodes.size(), 4u);
  auto be = testing::make_recording_backend(
      make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, true}), true);
  Executor t(m, *be, hp, find_workload("fashion-mlp"), data);
  NodeTimes times{std::vector<double>(4, 0.0), std::vector<double>(4, 0.0)};
  const std::vector<double>& fwd = times.forward_ms;
  const std::vector<double>& bwd = times.backward_ms;
  for (int k = 0; k < 3; ++k) {
    t.forward(32, true, &times);
    t.loss(32);
    t.backward(32, &times);
  }
  // Forward marks dense1 (with relu1) and dense2; backward marks dense2, relu1 and dense1.
  EXPECT_EQ(testing::recorder(be->ctx).marks, 3 * ((1 + 2 * 2) + (1 + 2 * 3)));
  EXPECT_GT(fwd[1], 0);
  EXPECT_EQ(fwd[2], 0) << "relu1's forward ran inside dense1";
  EXPECT_GT(fwd[3], 0);
  for (size_t i = 1; i < 4; ++i) EXPECT_GT(bwd[i], 0) << m.nodes[i].name;
  EXPECT_EQ(fwd[0] + bwd[0], 0) << "the input node runs nothing";
}

// Out of memory: the run gives back what it took and names the largest batch that fits, and
// that batch does fit while one more does not.
TEST(Executor, OutOfMemoryNamesTheLargestBatchThatFits) {
  DatasetPair data = synthetic(200, 1, 8, 8, 11);
  const Workload& w = find_workload("fashion-mlp");
  Hyper hp = w.defaults;
  const Model m = build_mlp(1, 8, 8, {16}, 10);
  auto be =
      testing::make_recording_backend(make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, true}));
  testing::Recorder& rec = testing::recorder(be->ctx);
  size_t run40 = 0, run41 = 0, data_bytes = 0;
  {
    hp.batch = 40;
    Executor t(m, *be, hp, w, data);
    const ArenaShape at40{40, true, t.train_count(), t.test_count()};
    ArenaShape at41 = at40;
    at41.batch = 41;
    run40 = layout_arena(m, t.plan(), at40).total, run41 = layout_arena(m, t.plan(), at41).total;
    data_bytes = rec.allocated - run40;
  }
  ASSERT_LT(run40, run41);
  ASSERT_EQ(rec.allocated, 0u);
  rec.memory_cap = run40 + data_bytes;  // batch 40 fits exactly
  for (int64_t batch : {128, 41}) {
    hp.batch = batch;
    try {
      Executor t(m, *be, hp, w, data);
      ADD_FAILURE() << "batch " << batch << " should not fit";
    } catch (const OutOfMemory& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("the largest batch that fits is 40 (--batch 40;"), std::string::npos)
          << msg;
      EXPECT_NE(msg.find("batch " + std::to_string(batch) + " needs"), std::string::npos) << msg;
    }
    EXPECT_EQ(rec.allocated, 0u) << "a failed start gives back what it took";
  }
  hp.batch = 40;
  Executor fits(m, *be, hp, w, data);
  EXPECT_EQ(fits.max_batch(), 40);
  EXPECT_EQ(rec.allocated, rec.memory_cap);
}

// The end-to-end check on the real data (WORKLOADS.md: about 0.88 after 10 epochs; one epoch
// already passes 0.80).
// --precision bf16 on the CPU: convolution and dense products read bf16 operands, the rest stays
// fp32. A toy ResNet's first step (loss, gradients) against the reference fed the same rounded
// operands (bf16_reference.h) and against fp32, then ten epochs of a learnable set.
// This net at its random start amplifies rounding: bf16 operands move its gradients 35% in
// relative L2 from fp32's (4% at the classifier, 37% at the stem; the reference on rounded
// operands lands as far: 38%), and the backend and that reference, which differ only where fp32
// accumulation order tips a value across a bf16 rounding boundary, end 15% apart (1% at the
// classifier), though every op matches the reference on rounded operands to 2e-7
// (BackendOpsTable, CpuConvModes). So the losses carry the tight bounds (measured 1.7e-4 and 2.4e-3
// apart), the gradients a loose one against the reference on rounded operands (a wrong operand or
// layout gives O(1)) and a floor against fp32 (fp32 arithmetic under a bf16 label: ~1e-6).
TEST(Executor, CpuBf16FollowsFp32) {
  if (!cpu::cpu_has_bf16_kernels()) GTEST_SKIP() << "this CPU has no bf16 instructions";
  const DatasetPair data = synthetic(64, 3, 16, 16, 31);
  const Model m = tiny_resnet(3, 1, 8);
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = 32, hp.epochs = 10;
  auto first_step = [&](Backend& be, std::vector<float>* grads) {
    Executor t(m, be, hp, w, data);
    be.fill(be.ctx, t.buffers().metrics, 0.f, 4);
    t.step(32, nullptr);  // the training set in order (the executor's start)
    grads->resize(size_t(m.param_count));
    be.download(be.ctx, grads->data(), t.buffers().grads, grads->size() * sizeof(float));
    float loss_sum = 0;
    be.download(be.ctx, &loss_sum, t.buffers().metrics, sizeof(float));
    return loss_sum / 32.f;
  };
  std::vector<float> g32;
  auto fp32 = make_backend({DeviceKind::cpu, 0, Precision::fp32, 2, false});
  const float loss32 = first_step(*fp32, &g32);
  // With bf16 maps (the default) each convolution's output is also rounded to bf16 before its
  // batch norm reads it; the reference then rounds them too. --fp32-maps against the reference
  // that does not.
  for (bool maps : {true, false}) {
    SCOPED_TRACE(maps ? "bf16 maps" : "fp32 maps");
    BackendConfig cfg{DeviceKind::cpu, 0, Precision::bf16, 2, false};
    cfg.bf16_maps = maps;
    auto bf16 = make_backend(cfg);
    auto emul = testing::make_bf16_reference(maps);
    std::vector<float> g16, g_emul;
    const float loss16 = first_step(*bf16, &g16);
    const float loss_emul = first_step(*emul, &g_emul);
    const double off_emul = rel_err(g16, g_emul), off_fp32 = rel_err(g16, g32);
    std::printf(
        "toy ResNet step, CPU bf16 (%s maps): loss %.5f (reference on bf16 operands %.5f, fp32 "
        "%.5f), gradients %.2e from the reference on bf16 operands, %.2e from fp32\n",
        maps ? "bf16" : "fp32", loss16, loss_emul, loss32, off_emul, off_fp32);
    // Rounding each convolution's output the same way on both sides absorbs most accumulation
    // order differences (measured 5e-3 apart with bf16 maps, 0.15 without).
    EXPECT_NEAR(loss16, loss_emul, (maps ? 1e-4 : 1e-3) * loss_emul);
    EXPECT_LE(off_emul, maps ? 0.03 : 0.3);
    EXPECT_NEAR(loss16, loss32, 1e-2 * loss32);
    EXPECT_GE(off_fp32, 1e-3) << "bf16 gradients as close to fp32's as fp32 rounding: not bf16";
  }

  auto bf16 = make_backend({DeviceKind::cpu, 0, Precision::bf16, 2, false});
  hp.batch = 16;
  Executor t(m, *bf16, hp, w, data);
  const TrainResult r = train(t, nullptr);
  for (const EpochResult& e : r.epochs) EXPECT_TRUE(std::isfinite(e.loss));
  EXPECT_LT(r.epochs.back().loss, 0.5 * r.epochs.front().loss);
  std::printf("toy ResNet, 10 epochs in CPU bf16: loss %.4f -> %.4f\n", r.epochs.front().loss,
              r.epochs.back().loss);
}

// CPU bf16's weights come from a bf16 mirror the optimizer keeps (BackendConfig::reuse_bf16, on
// by default), and with it each convolution's output gradient is stored in bf16 by the batch
// norm after it (Backend::bf16_conv_grads), which the convolution would otherwise convert itself.
// (The maps are bf16 both ways: bf16 storage does not depend on reuse.)
// Without reuse every call converts its own operands. Same numbers either way: two epochs of the
// toy ResNet end with the same parameters to the bit, with each convolution in the mode the
// deterministic choice gives it (matmul forms on its small maps, oneDNN's NHWC kernel for the
// stem) and with every convolution that can forced into oneDNN's kernels, plain and blocked.
TEST(Executor, CpuBf16WeightMirrorChangesNoNumber) {
  if (!cpu::cpu_has_bf16_kernels()) GTEST_SKIP() << "this CPU has no bf16 instructions";
  const DatasetPair data = synthetic(40, 3, 16, 16, 41);
  const Model m = tiny_resnet(3, 1, 8);
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = 16, hp.epochs = 2;
  for (std::optional<cpu::ConvMode> mode :
       {std::optional<cpu::ConvMode>{}, std::optional{cpu::ConvMode::plain},
        std::optional{cpu::ConvMode::blocked}}) {
    SCOPED_TRACE(mode ? cpu::conv_mode_name(*mode) : "chosen");
    std::vector<float> params[2];
    for (bool reuse : {true, false}) {
      BackendConfig cfg{DeviceKind::cpu, 0, Precision::bf16, 2, false};
      cfg.deterministic = true, cfg.reuse_bf16 = reuse;
      auto be = make_backend(cfg);
      cpu::context(be->ctx).conv_mode = mode;
      Executor t(m, *be, hp, w, data);
      const auto& bf16_grads = t.plan().grad_bf16;
      // Every convolution of the toy ResNet feeds a batch norm alone.
      int convs = 0;
      for (const Node& n : m.nodes) convs += n.kind == OpKind::conv2d;
      EXPECT_EQ(std::count(bf16_grads.begin(), bf16_grads.end(), 1), reuse ? convs : 0);
      // ... and its output is a bf16 map, reuse or not (Backend::bf16_maps).
      for (size_t i = 0; i < m.nodes.size(); ++i)
        if (m.nodes[i].kind == OpKind::conv2d) {
          EXPECT_TRUE(t.plan().out_bf16[i]) << m.nodes[i].name;
        }
      train(t, nullptr);
      params[reuse] = t.download_params();
    }
    EXPECT_EQ(params[0], params[1]);
  }
}

// A test-only Executor (what `evaluate` makes) holds no gradients, optimizer state or training
// set, yet tests a loaded model as the Executor that trained it does: the same accuracy and loss
// to the bit, on the test set and, swapped into the test slot, on the training set. Anything
// that trains refuses in one line. The same under CPU bf16, whose test-only plan keeps the same
// maps in bf16 as the training one, each in half an fp32 buffer.
TEST(Executor, TestOnlyTrainerTestsAsTheTrainingOne) {
  const DatasetPair data = synthetic(40, 3, 16, 16, 43);
  const Model m = tiny_resnet();
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = 16, hp.epochs = 2;
  std::vector<Precision> precisions = {Precision::fp32};
  if (cpu::cpu_has_bf16_kernels()) precisions.push_back(Precision::bf16);
  for (Precision prec : precisions) {
    SCOPED_TRACE(precision_name(prec));
    BackendConfig cfg{DeviceKind::cpu, 0, prec, 2, false};
    cfg.deterministic = true;  // one algorithm per convolution in both Trainers
    auto be = make_backend(cfg);
    Executor trained(m, *be, hp, w, data);
    const TrainResult r = train(trained, nullptr);
    const Checkpoint c = capture_checkpoint(trained, r, "", {});
    const EvalResult expect = trained.evaluate();

    DatasetPair swapped = data;
    std::swap(swapped.test, swapped.train);
    const DatasetPair* sets[] = {&data, &swapped};
    for (const DatasetPair* d : sets) {
      auto be2 = make_backend(cfg);
      Executor t(m, *be2, hp, w, *d, ExecutorUse::test_only);
      EXPECT_EQ(t.buffers().grads, nullptr);
      EXPECT_EQ(t.buffers().opt_m, nullptr);
      EXPECT_EQ(t.buffers().opt_v, nullptr);
      EXPECT_EQ(t.buffers().scratch, nullptr);
      EXPECT_EQ(t.buffers().train_images, nullptr);
      EXPECT_EQ(t.buffers().train_indices, nullptr);
      for (float* g : t.buffers().grad) EXPECT_EQ(g, nullptr);
      EXPECT_EQ(t.plan().out_bf16, trained.plan().out_bf16);
      // Parameters and activations only: under half of what training takes at this batch.
      EXPECT_EQ(t.max_batch(), 16);
      EXPECT_LT(t.arena_layout().total, trained.arena_layout().total / 2);
      load_model(t, c, "trained");
      const EvalResult e = t.evaluate();
      auto be3 = make_backend(cfg);
      Executor full(m, *be3, hp, w, *d);
      load_model(full, c, "trained");
      const EvalResult f = full.evaluate();
      EXPECT_EQ(e.images, d->test.count);
      EXPECT_EQ(e.accuracy, f.accuracy);
      EXPECT_EQ(e.loss, f.loss);
      if (d == &data) {
        EXPECT_EQ(e.loss, expect.loss);
        EXPECT_EQ(e.accuracy, expect.accuracy);
      }
      EXPECT_THROW(train(t, nullptr), Error);
      try {
        t.step(16, nullptr);
        ADD_FAILURE() << "a test-only Executor stepped";
      } catch (const Error& err) {
        EXPECT_NE(std::string(err.what()).find("test passes only"), std::string::npos)
            << err.what();
      }
    }
    if (prec != Precision::bf16) continue;

    // A bf16 map's buffer is half an fp32 one's (up to each buffer's 256-byte alignment).
    auto be2 = make_backend(cfg);
    Executor t(m, *be2, hp, w, data, ExecutorUse::test_only);
    cfg.bf16_maps = false;
    auto be3 = make_backend(cfg);
    Executor fp32_maps(m, *be3, hp, w, data, ExecutorUse::test_only);
    double halves = 0, maps = 0;
    for (size_t i = 0; i < m.nodes.size(); ++i)
      if (t.plan().out_bf16[i]) halves += double(hp.batch * m.nodes[i].out_size()) * 2, maps++;
    const double saved = double(fp32_maps.arena_layout().total) - double(t.arena_layout().total);
    EXPECT_NEAR(saved, halves, 256.0 * maps);
    EXPECT_GT(halves, 0);
  }
}

// A diverged run names the first layer whose output is not finite, reading a bf16 map as bf16:
// NaN weights in the last convolution make its output (a bf16 map) the first non-finite one (the
// batch norm after it, an fp32 map, the next). The ReLUs after it turn NaN into 0, so a NaN
// classifier bias makes the loss diverge.
TEST(Executor, DivergedLayerFoundInABf16Map) {
  if (!cpu::cpu_has_bf16_kernels()) GTEST_SKIP() << "this CPU has no bf16 instructions";
  const DatasetPair data = synthetic(40, 3, 16, 16, 47);
  const Model m = tiny_resnet();
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = 16, hp.epochs = 1;
  auto be = make_backend({DeviceKind::cpu, 0, Precision::bf16, 2, false});
  Executor t(m, *be, hp, w, data);
  size_t last_conv = 0;
  for (size_t i = 0; i < m.nodes.size(); ++i)
    if (m.nodes[i].kind == OpKind::conv2d) last_conv = i;
  ASSERT_TRUE(t.plan().out_bf16[last_conv]);
  std::vector<float> params = t.download_params();
  const Node& conv = m.nodes[last_conv];
  std::fill_n(params.begin() + conv.param_offset, conv.param_count, std::nanf(""));
  params.back() = std::nanf("");  // the classifier's last bias
  t.upload_params(params);
  const TrainResult r = train(t, nullptr);
  EXPECT_TRUE(r.diverged);
  EXPECT_EQ(r.diverged_layer, m.nodes[last_conv].name);
}

TEST(Executor, FashionMlpOneEpochReachesEightyPercent) {
  if (!std::filesystem::exists(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
  DatasetPair data = load_fashion_mnist(kFashionMnistDir);
  const Workload& w = find_workload("fashion-mlp");
  Hyper hp = w.defaults;
  hp.epochs = 1;
  Model m = build_workload_model(w, data.train);
  auto be = make_backend({DeviceKind::cpu, 0, Precision::fp32, 0, false});
  Executor t(m, *be, hp, w, data);
  TrainResult r = train(t, nullptr);
  EvalResult e = t.evaluate();
  EXPECT_EQ(r.steps, 1875);
  EXPECT_LT(r.epochs[0].loss, 0.7);  // from ln(10) = 2.30 at the start
  // Every step runs as the CPU's fused MLP step, the sampled ones too (so sampling changes no
  // number): no part-by-part split, and 29 host-overhead samples in 1875 steps. On the CPU the
  // host does the work, so issuing a step takes the whole step.
  EXPECT_TRUE(t.fused_mlp_taken());
  EXPECT_EQ(r.split.samples, 0);
  EXPECT_EQ(r.split.host_samples, 29);
  EXPECT_LE(r.split.host_ms, r.split.whole_ms);
  EXPECT_GT(r.split.host_ms, 0.9 * r.split.whole_ms);
  EXPECT_GE(e.accuracy, 0.80);
  EXPECT_LT(e.accuracy, 1.0);

  RunFacts f;
  f.train = r, f.test = e, f.device.kind = "cpu", f.device.name = "cpu", f.backend = be->name;
  f.train_flops_per_image = train_flops_per_image(m);
  // 1 TFLOP/s: more than this step reaches (at most 8 threads run it), so the MFU is a number.
  f.device.peak_datasheet = 1e12;
  nlohmann::json rec = make_record(w, hp, m, f);
  for (const char* key : {"trainbench_version", "workload", "device", "precision", "batch",
                          "epochs", "steps", "seed", "threads", "times_s", "throughput", "accuracy",
                          "loss", "flops", "utilisation", "machine", "versions"})
    EXPECT_TRUE(rec.contains(key)) << key;
  EXPECT_DOUBLE_EQ(rec["accuracy"]["test"].get<double>(), e.accuracy);
  EXPECT_NEAR(rec["flops"]["mfu"].get<double>(),
              f.train_flops_per_image * r.images_per_s_steady / 1e12, 1e-12);
}

// ResNet-50 itself (WORKLOADS.md's model, Adam at its defaults) on 320 real CIFAR-10 training
// images, all classes: three passes, the loss falls and the train accuracy climbs above chance.
// Where the shared archive is not next to this checkout, the binary layout under data/cifar10
// or $TRAINBENCH_DATA is used; with neither the test skips and says so.
TEST(Executor, ResNet50LossFallsOnRealCifarSubset) {
  const std::string archive =
      std::string(TRAINBENCH_SOURCE_DIR) + "/../shared/data/cifar10-jpeg.tar.gz";
  DatasetPair full;
  try {
    full = load_cifar10(std::filesystem::exists(archive) ? archive : "");
  } catch (const Error& e) {
    GTEST_SKIP() << "no CIFAR-10 here: " << e.what();
  }
  // Every k-th image: an image folder lists one class after another, so a prefix is one class.
  const int64_t count = 320, pixels = full.train.image_size();
  DatasetPair data;
  for (auto [dst, src] : {std::pair{&data.train, &full.train}, std::pair{&data.test, &full.test}}) {
    dst->name = src->name, dst->channels = src->channels, dst->classes = src->classes;
    dst->height = src->height, dst->width = src->width, dst->count = count;
    const int64_t every = src->count / count;
    for (int64_t i = 0; i < count; ++i) {
      const uint8_t* img = src->images.data() + i * every * pixels;
      dst->images.insert(dst->images.end(), img, img + pixels);
      dst->labels.push_back(src->labels[size_t(i * every)]);
    }
  }
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = 32, hp.epochs = 3;  // 10 steps an epoch
  Model m = build_workload_model(w, data.train);
  // Deterministic: with timed choices the modes (and so the rounding) follow the machine's load,
  // and three epochs on 320 images amplify rounding into a loss that may or may not fall by 15%.
  BackendConfig cfg{DeviceKind::cpu, 0, Precision::fp32, 0, false};
  cfg.deterministic = true;
  auto be = make_backend(cfg);
  Executor t(m, *be, hp, w, data);
  TrainResult r = train(t, nullptr);
  ASSERT_EQ(r.epochs.size(), 3u);
  for (const EpochResult& e : r.epochs) EXPECT_TRUE(std::isfinite(e.loss));
  EXPECT_GT(r.epochs[0].loss, 1.8);  // about ln(10) = 2.30 at the start, above it while BN settles
  EXPECT_LT(r.epochs[2].loss, 0.85 * r.epochs[0].loss);
  EXPECT_GT(r.epochs[2].accuracy, 0.2);  // chance is 0.1
  EvalResult e = t.evaluate();           // BN in eval mode: finite, and it ran every image
  EXPECT_EQ(e.images, count);
  EXPECT_TRUE(std::isfinite(e.loss));
  // Every convolution says how it ran (the record's "algorithms"): 53 of them, each a mode.
  int convs = 0;
  const std::vector<std::string> notes = t.node_notes();
  for (size_t i = 0; i < notes.size(); ++i) {
    if (notes[i].empty()) continue;
    EXPECT_EQ(notes[i].rfind("mode: ", 0), 0u) << m.nodes[i].name << ": " << notes[i];
    convs += m.nodes[i].name.find("conv") != std::string::npos;
  }
  EXPECT_EQ(convs, 53);
  std::printf(
      "resnet50, 320 CIFAR-10 images: epoch losses %.3f %.3f %.3f, train acc %.3f, "
      "%.1f images/s\n",
      r.epochs[0].loss, r.epochs[1].loss, r.epochs[2].loss, r.epochs[2].accuracy, r.images_per_s);
}

}  // namespace tb
