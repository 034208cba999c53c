// `trainbench profile`: the rows of a real profiled MLP add up to the measured step, the plan's
// fusions named in the notes, JSON round trip, the bandwidth table, and the command line.
#include "report/profile.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <random>

#include "../models/tiny_resnet.h"
#include "backends/backend.h"
#include "bench/peaks.h"
#include "data/idx.h"
#include "report_test_util.h"

namespace tb {
namespace {

using testing::ReportDir;

// A small learnable data set in Fashion-MNIST's shape.
DatasetPair synthetic(int count, int h, int w) {
  DatasetPair d;
  std::mt19937_64 rng(7);
  for (Dataset* s : {&d.train, &d.test}) {
    s->name = "synthetic";
    s->count = count, s->channels = 1, s->height = h, s->width = w, s->classes = 10;
    s->images.resize(size_t(count) * h * w);
    s->labels.resize(size_t(count));
    for (int i = 0; i < count; ++i) {
      const int label = int(rng() % 10);
      s->labels[size_t(i)] = uint8_t(label);
      for (int j = 0; j < h * w; ++j)
        s->images[size_t(i) * h * w + j] = uint8_t((j % 10 == label ? 200 : 30) + int(rng() % 40));
    }
  }
  return d;
}

// A node the backend ran in another precision (a bf16 run's tf32 layers) is drawn against that
// precision's peak, or against none where that peak is unknown; the others against the run's.
TEST(Profile, NodeInAnotherPrecisionUsesItsPeak) {
  const Model m = build_mlp(1, 28, 28, {128}, 10);
  const size_t nodes = m.nodes.size();
  const Plan plan = compile_plan(m, PlanCaps{}, true, false);
  StepTimings t;
  t.nodes.forward_ms.assign(nodes, 1.0), t.nodes.backward_ms.assign(nodes, 1.0);
  t.precision.assign(nodes, std::nullopt);
  t.batch = 32, t.steps = 1, t.step_ms = 10;
  Roofline roof;
  roof.peak_flops = 100e12, roof.bandwidth = 1e18;  // every layer compute-bound
  auto row = [&](const ProfileReport& r, const std::string& name) {
    for (const LayerRow& l : r.layers)
      if (l.name == name) return l;
    ADD_FAILURE() << "no row " << name;
    return LayerRow{};
  };
  const ProfileReport plain = build_profile(m, plan, t, roof);
  t.precision[3] = Precision::tf32;
  roof.other_peaks[Precision::tf32] = 50e12;
  const ProfileReport tagged = build_profile(m, plan, t, roof);
  for (const ProfileReport* r : {&plain, &tagged})
    for (size_t i : {size_t(1), size_t(3)})
      ASSERT_TRUE(row(*r, m.nodes[i].name).roofline_share) << m.nodes[i].name;
  EXPECT_DOUBLE_EQ(*row(tagged, m.nodes[3].name).roofline_share,
                   2 * *row(plain, m.nodes[3].name).roofline_share);
  EXPECT_DOUBLE_EQ(*row(tagged, m.nodes[1].name).roofline_share,
                   *row(plain, m.nodes[1].name).roofline_share);
  roof.other_peaks.clear();
  EXPECT_EQ(row(build_profile(m, plan, t, roof), m.nodes[3].name).bound, "unknown");
}

TEST(Profile, RowsAddUpToMeasuredStep) {
  const DatasetPair data = synthetic(512, 28, 28);
  Workload w = find_workload("fashion-mlp");
  Hyper hp = w.defaults;
  hp.batch = 32;
  const Model m = build_mlp(1, 28, 28, {128}, 10);
  // One thread: on a loaded machine, OpenMP teams of two lose whole scheduler slices per region.
  auto be = make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, false});
  Executor t(m, *be, hp, w, data);
  const StepTimings timings = time_steps(t, 30, 2);
  Roofline roof;
  roof.peak_flops = 100e9, roof.bandwidth = 10e9;  // ridge 10 FLOP/byte
  const ProfileReport r = build_profile(m, t.plan(), timings, roof);

  ASSERT_GT(r.step_ms, 0);
  double rows = 0;
  for (const LayerRow& l : r.layers) rows += l.total_ms();
  for (const OtherRow& o : r.other) rows += o.ms;
  EXPECT_NEAR(rows, r.step_ms, 0.01 * r.step_ms);
  double shares = 0;
  for (const LayerRow& l : r.layers) shares += l.share;
  for (const OtherRow& o : r.other) shares += o.share;
  EXPECT_NEAR(shares, 1.0, 0.01);
  // The per-node timing costs something but not an order of magnitude on a 784-128-10 MLP.
  EXPECT_GT(r.instrumented_step_ms, 0.1 * r.step_ms);
  EXPECT_LT(r.instrumented_step_ms, 10.0 * r.step_ms);

  // fc1 (fused with the ReLU), relu (forward 0), fc2; sorted by total time.
  ASSERT_EQ(r.layers.size(), 3u);
  for (size_t i = 1; i < r.layers.size(); ++i)
    EXPECT_GE(r.layers[i - 1].total_ms(), r.layers[i].total_ms());
  for (const LayerRow& l : r.layers) {
    EXPECT_GE(l.forward_ms, 0);
    EXPECT_GT(l.backward_ms, 0) << l.name;
    if (l.op == "relu") {
      EXPECT_EQ(l.forward_ms, 0);
      EXPECT_NE(l.note.find("fused"), std::string::npos);
      EXPECT_EQ(l.bound, "memory");
    }
    if (l.op == "dense") {
      EXPECT_GT(l.forward_ms, 0);
      EXPECT_NEAR(l.gflops, (l.flops_forward + l.flops_backward) / (l.total_ms() / 1e3) / 1e9,
                  1e-9 * l.gflops);
      EXPECT_NEAR(l.intensity, (l.flops_forward + l.flops_backward) / l.bytes, 1e-12);
      EXPECT_EQ(l.bound, l.intensity >= 10 ? "compute" : "memory");
    }
  }
  const std::string text = format_profile_text(r);
  EXPECT_NE(text.find("unattributed"), std::string::npos);
  EXPECT_NE(text.find("forward includes"), std::string::npos);
}

// A small ResNet: the fusions show in the notes (bn1+relu both ways; bn3, add and relu3 in the
// add's forward), every row's times are non-negative, and the report says how nodes were timed.
TEST(Profile, ResNetFusionsAreNamed) {
  const DatasetPair data = synthetic(64, 16, 16);  // one channel
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = 16;
  const Model m = testing::tiny_resnet(1, 2);  // one channel; stage 1 has an identity block
  BackendConfig cfg{DeviceKind::cpu, 0, Precision::fp32, 1, false};
  cfg.deterministic = true;
  auto be = make_backend(cfg);
  Executor t(m, *be, hp, w, data);
  const ProfileReport r = build_profile(m, t.plan(), time_steps(t, 2, 1), Roofline{});
  EXPECT_EQ(r.node_timing, "host clock between synchronizes around each node");
  auto row = [&](const std::string& name) -> const LayerRow* {
    for (const LayerRow& l : r.layers)
      if (l.name == name) return &l;
    return nullptr;
  };
  for (const std::string block : {"layer1.0", "layer1.1"}) {
    const LayerRow* add = row(block + ".add");
    const LayerRow* bn3 = row(block + ".bn3");
    const LayerRow* relu3 = row(block + ".relu3");
    ASSERT_TRUE(add && bn3 && relu3) << block;
    EXPECT_EQ(add->note, "forward includes " + block + ".bn3 and " + block + ".relu3 (fused)");
    EXPECT_EQ(bn3->note, "forward fused into " + block + ".add");
    EXPECT_EQ(relu3->note, "forward fused into " + block + ".add");
    EXPECT_GT(add->forward_ms, 0);
    EXPECT_GT(bn3->backward_ms, 0);
  }
  const LayerRow* bn1 = row("layer1.0.bn1");
  ASSERT_TRUE(bn1);
  EXPECT_EQ(bn1->note, "forward and backward include layer1.0.relu1 (fused)");
  EXPECT_EQ(row("layer1.0.relu1"), nullptr) << "a ReLU fused both ways has no row";
  for (const LayerRow& l : r.layers) EXPECT_GE(l.forward_ms, 0) << l.name;
  EXPECT_EQ(profile_from_json(profile_json(r)).node_timing, r.node_timing);
}

TEST(Profile, JsonRoundTrip) {
  ProfileReport r;
  r.workload = "fashion-mlp", r.device = "cpu x", r.device_kind = "cpu", r.precision = "fp32";
  r.batch = 32, r.steps = 10, r.warmup = 2, r.step_ms = 1.5, r.instrumented_step_ms = 1.6;
  r.roof.peak_flops = 1e11, r.roof.bandwidth = 1e10;
  LayerRow l;
  l.name = "fc1", l.op = "dense", l.shape = "128", l.forward_ms = 0.5, l.backward_ms = 0.7;
  l.flops_forward = 1e6, l.flops_backward = 1e6, l.bytes = 1e5, l.gflops = 1.67, l.intensity = 20;
  l.bound = "compute", l.roofline_share = 0.0167, l.share = 0.8;
  r.layers.push_back(l);
  r.other = {{"data", "d", 0.1, 0.0667},
             {"loss", "l", 0.05, 0.0333},
             {"optimizer", "o", 0.2, 0.13},
             {"unattributed", "u", -0.05, -0.0333}};
  const nlohmann::json j = profile_json(r);
  for (const char* key : {"workload", "device", "precision", "batch", "step_ms", "layers", "other"})
    EXPECT_TRUE(j.contains(key)) << key;
  for (const char* key : {"name", "op", "forward_ms", "backward_ms", "flops_forward",
                          "flops_backward", "bytes", "gflops", "intensity", "bound", "share"})
    EXPECT_TRUE(j["layers"][0].contains(key)) << key;
  EXPECT_EQ(profile_table(profile_from_json(j)), profile_table(r));
}

// Counts in a profile JSON that no integer holds are read as 0, not converted (undefined).
TEST(Profile, JsonCountsOutOfRangeReadAsZero) {
  const ProfileReport r = profile_from_json(
      {{"layers", nlohmann::json::array()}, {"batch", 1e300}, {"steps", -1e300}, {"threads", 4}});
  EXPECT_EQ(r.batch, 0);
  EXPECT_EQ(r.steps, 0);
  EXPECT_EQ(r.threads, 4);
}

TEST(Profile, GpuBandwidthTable) {
  std::string source;
  EXPECT_DOUBLE_EQ(*gpu_memory_bandwidth("NVIDIA H100 80GB HBM3", &source), 3.35e12);
  EXPECT_NE(source.find("datasheet"), std::string::npos);
  EXPECT_DOUBLE_EQ(*gpu_memory_bandwidth("NVIDIA H200", nullptr), 4.8e12);
  EXPECT_DOUBLE_EQ(*gpu_memory_bandwidth("NVIDIA A100-SXM4-80GB", nullptr), 2.0e12);
  EXPECT_FALSE(gpu_memory_bandwidth("NVIDIA GeForce RTX 3090", nullptr));
  EXPECT_FALSE(gpu_memory_bandwidth("Mystery", nullptr));
}

TEST(Profile, MeasuredCpuBandwidthIsPlausible) {
  std::string source;
  const double bw = measure_memory_bandwidth(2, 0.05, &source);
  EXPECT_GT(bw, 0.1e9);  // even a slow VM copies more than 100 MB/s
  EXPECT_LT(bw, 10e12);
  EXPECT_NE(source.find("memcpy"), std::string::npos);
}

TEST(Profile, CommandLine) {
  if (!std::filesystem::exists(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
  ReportDir dir;
  const std::string out = (dir.path / "p.json").string(), log = (dir.path / "log").string();
  const std::string cmd = std::string(TRAINBENCH_BINARY) +
                          " profile fashion-mlp --steps 3 --threads 2 --out " + out + " >" + log +
                          " 2>&1";
  const int st = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << testing::read_file(log);
  const std::string text = testing::read_file(log);
  EXPECT_NE(text.find("dense1"), std::string::npos) << text;
  const nlohmann::json j = nlohmann::json::parse(testing::read_file(out));
  EXPECT_EQ(j["workload"], "fashion-mlp");
  EXPECT_EQ(j["batch"], 32);
  EXPECT_EQ(j["layers"].size(), 3u);
}

}  // namespace
}  // namespace tb
