// The execution plan: which fused steps it names, that every node is computed once, that the
// backward writes each gradient first and then accumulates, and that its FLOPs are the model's.
#include "train/plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "../models/tiny_resnet.h"
#include "backends/backend.h"

namespace tb {
namespace {

std::map<std::string, int> count_ops(const Plan& p) {
  std::map<std::string, int> c;
  for (const ForwardStep& s : p.forward) c[op_name(s.op)]++;
  return c;
}

// Every node but the input is computed by exactly one forward step.
void expect_each_node_once(const Model& m, const Plan& p) {
  std::vector<int> seen(m.nodes.size(), 0);
  for (const ForwardStep& s : p.forward)
    for (int n : s.covers) seen[size_t(n)]++;
  EXPECT_EQ(seen[0], 0);
  for (size_t i = 1; i < m.nodes.size(); ++i) EXPECT_EQ(seen[i], 1) << m.nodes[i].name;
}

TEST(Plan, ResNet50NamesItsFusions) {
  const Model m = build_resnet50(10);
  const Plan p = compile_plan(m, PlanCaps{true, true, false}, true, true);
  const auto ops = count_ops(p);
  EXPECT_EQ(ops.at("bn_add_relu"), 16);      // one per bottleneck: bn3, the add and relu3
  EXPECT_EQ(ops.at("bn_relu"), 1 + 2 * 16);  // the stem's and each block's bn1 and bn2
  EXPECT_EQ(ops.at("batchnorm"), 4);         // the projections' BN, the add's other input
  EXPECT_EQ(ops.count("relu"), 0u);
  EXPECT_EQ(ops.at("conv2d"), 53);
  expect_each_node_once(m, p);
  EXPECT_DOUBLE_EQ(p.train_flops_per_image(m), train_flops_per_image(m));
  EXPECT_FALSE(p.mlp.fits);
  EXPECT_NE(describe_plan(m, p).find("bn_add_relu"), std::string::npos);
}

// Where the backend stores convolution gradients in bf16 (CPU bf16), every one of ResNet-50's 53
// convolutions feeds a batch norm alone, so every one's gradient is bf16; nothing else's is, and
// nothing is without the capability, under NCHW or in a test-only plan.
TEST(Plan, ConvolutionGradientsInBf16WhereTheBackendTakesThem) {
  const Model m = build_resnet50(10);
  PlanCaps caps{true, true, false, true};
  caps.bf16_conv_grads = true;
  const Plan p = compile_plan(m, caps, true, true);
  ASSERT_EQ(p.layout, Layout::nhwc);
  for (size_t i = 0; i < m.nodes.size(); ++i)
    EXPECT_EQ(p.grad_bf16[i], m.nodes[i].kind == OpKind::conv2d) << m.nodes[i].name;
  caps.nhwc = false;
  const Plan nchw = compile_plan(m, caps, true, true);
  EXPECT_EQ(std::count(nchw.grad_bf16.begin(), nchw.grad_bf16.end(), 1), 0);
  const Plan test_only = compile_plan(m, PlanCaps{true, true, false, true, true}, false, true);
  EXPECT_EQ(std::count(test_only.grad_bf16.begin(), test_only.grad_bf16.end(), 1), 0);
  const Plan without = compile_plan(m, PlanCaps{true, true, false, true}, true, true);
  EXPECT_EQ(std::count(without.grad_bf16.begin(), without.grad_bf16.end(), 1), 0);
}

// Where the backend stores maps in bf16 (CPU bf16 under NHWC): every convolution's output (a
// batch norm alone reads each of ResNet-50's 53) and the output of each fused BN+ReLU that only
// convolutions read (the first two of each of the 16 blocks; not the stem's, which the max-pool
// reads, nor a block's last, which the next add reads too). A test-only plan stores the same; with
// the ReLUs as steps of their own (no bn_relu), only the convolutions' outputs; nothing under NCHW
// or without the capability.
TEST(Plan, MapsInBf16WhereOnlyConvolutionsAndBatchNormsReadThem) {
  const Model m = build_resnet50(10);
  PlanCaps caps{true, true, false, true};
  caps.bf16_maps = true;
  std::vector<std::vector<int>> consumers(m.nodes.size());
  for (size_t i = 0; i < m.nodes.size(); ++i)
    for (int in : {m.nodes[i].in0, m.nodes[i].in1})
      if (in >= 0) consumers[size_t(in)].push_back(int(i));
  auto only_convs_read = [&](size_t i) {
    return !consumers[i].empty() &&
           std::all_of(consumers[i].begin(), consumers[i].end(),
                       [&](int c) { return m.nodes[size_t(c)].kind == OpKind::conv2d; });
  };
  for (bool trains : {true, false}) {
    const Plan p = compile_plan(m, caps, trains, true);
    ASSERT_EQ(p.layout, Layout::nhwc);
    for (size_t i = 0; i < m.nodes.size(); ++i) {
      const Node& n = m.nodes[i];
      const bool bn_relu = n.kind == OpKind::relu &&
                           m.nodes[size_t(n.in0)].kind == OpKind::batchnorm && only_convs_read(i);
      EXPECT_EQ(p.out_bf16[i], n.kind == OpKind::conv2d || bn_relu) << n.name;
    }
    EXPECT_EQ(std::count(p.out_bf16.begin(), p.out_bf16.end(), 1), 53 + 32);
  }
  PlanCaps unfused = caps;
  unfused.bn_relu = false;
  const Plan relu_steps = compile_plan(m, unfused, true, true);
  EXPECT_EQ(std::count(relu_steps.out_bf16.begin(), relu_steps.out_bf16.end(), 1), 53);
  caps.nhwc = false;
  const Plan nchw = compile_plan(m, caps, true, true);
  EXPECT_EQ(std::count(nchw.out_bf16.begin(), nchw.out_bf16.end(), 1), 0);
  const Plan without = compile_plan(m, PlanCaps{true, true, false, true}, true, true);
  EXPECT_EQ(std::count(without.out_bf16.begin(), without.out_bf16.end(), 1), 0);
}

TEST(Plan, WithoutFusedEntriesEveryNodeIsItsOwnStep) {
  const Model m = testing::tiny_resnet();
  const Plan p = compile_plan(m, PlanCaps{}, true, true);
  const auto ops = count_ops(p);
  EXPECT_EQ(ops.count("bn_relu"), 0u);
  EXPECT_EQ(ops.count("bn_add_relu"), 0u);
  EXPECT_GT(ops.at("relu"), 0);
  expect_each_node_once(m, p);
  for (size_t i = 0; i < m.nodes.size(); ++i) EXPECT_TRUE(p.has_out[i]) << m.nodes[i].name;
}

// Replays the plan's gradient writes: a node's gradient is written first (or shared with an add
// that wrote it) before anything accumulates into it, and nothing writes the input's.
TEST(Plan, GradientsAreWrittenBeforeTheyAccumulate) {
  for (const Model& m : {build_resnet50(10), testing::tiny_resnet()}) {
    for (bool fused : {false, true}) {
      const Plan p = compile_plan(m, PlanCaps{fused, fused, false}, true, true);
      std::vector<int> written(m.nodes.size(), 0);
      auto take = [&](int node, GradWrite w) {
        if (w == GradWrite::none) return;
        ASSERT_NE(node, 0);
        if (w == GradWrite::accumulate)
          EXPECT_TRUE(written[size_t(node)]) << m.nodes[size_t(node)].name;
        else
          EXPECT_FALSE(written[size_t(node)]) << m.nodes[size_t(node)].name;
        written[size_t(node)] = 1;
        EXPECT_GE(p.grad_buffer[size_t(node)], 0) << m.nodes[size_t(node)].name;
      };
      for (const BackwardStep& s : p.backward) {
        const Node& n = m.nodes[size_t(s.node)];
        take(n.in0, s.dx);
        if (s.op == BackwardOp::add) take(n.in1, s.dskip);
      }
      // Every node whose gradient exists got one (the last node's comes from the loss).
      for (size_t i = 1; i + 1 < m.nodes.size(); ++i) {
        EXPECT_TRUE(written[i] || p.grad_buffer[i] < 0) << m.nodes[i].name;
      }
    }
  }
}

TEST(Plan, MlpIsDenseReluThenDense) {
  const Model m = build_mlp(1, 28, 28, {128}, 10);
  const Plan p = compile_plan(m, PlanCaps{true, true, true}, true, true);
  ASSERT_EQ(p.forward.size(), 2u);
  EXPECT_EQ(p.forward[0].op, ForwardOp::dense_relu);
  EXPECT_EQ(p.forward[0].writes, 2);  // the ReLU's output; the dense's never exists
  EXPECT_FALSE(p.has_out[1]);
  EXPECT_EQ(p.forward[1].op, ForwardOp::dense);
  ASSERT_EQ(p.backward.size(), 3u);  // dense2, the ReLU's backward, dense1
  EXPECT_EQ(p.backward[1].op, BackwardOp::relu);
  EXPECT_EQ(p.backward[2].dx, GradWrite::none);  // dense1 reads the input: no input gradient
  EXPECT_TRUE(p.mlp.fits);
  EXPECT_EQ(p.mlp.hidden, 128);
  EXPECT_FALSE(compile_plan(m, PlanCaps{true, true, true}, true, false).mlp.fits);  // SGD
  EXPECT_FALSE(compile_plan(m, PlanCaps{}, true, true).mlp.fits);  // no fused entry
}

TEST(Plan, TestOnlyHasNoBackwardAndNoGradients) {
  const Model m = testing::tiny_resnet();
  const Plan p = compile_plan(m, PlanCaps{true, true, false}, false, true);
  EXPECT_TRUE(p.backward.empty());
  for (int g : p.grad_buffer) EXPECT_EQ(g, -1);
  expect_each_node_once(m, p);
}

// The CPU backend offers the fused batch-norm entries and the fused MLP step: its plan is the
// fused one.
TEST(Plan, CapsComeFromTheBackendTable) {
  auto cpu = make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, false});
  auto ref = make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, true});
  const PlanCaps c = plan_caps(*cpu), r = plan_caps(*ref);
  EXPECT_TRUE(c.bn_relu && c.bn_add_relu);
  EXPECT_TRUE(c.mlp_step);          // fp32
  EXPECT_FALSE(c.bf16_conv_grads);  // fp32: no bf16 copies to make
  EXPECT_EQ(r.bn_relu, ref->batchnorm_relu_backward != nullptr);
  EXPECT_TRUE(c.nhwc);
  EXPECT_FALSE(r.nhwc);
  BackendConfig nchw{DeviceKind::cpu, 0, Precision::fp32, 1, false};
  nchw.cpu_nhwc = false;
  EXPECT_FALSE(plan_caps(*make_backend(nchw)).nhwc);
}

// NHWC where the backend takes it, unless a dense layer flattens a map of several channels (its
// weights are in NCHW's order): the MLP on one-channel images and ResNet (pooled to [n, c]) take
// it; a dense layer on a 3-channel image does not.
TEST(Plan, NhwcWhereNoDenseLayerFlattensAMap) {
  PlanCaps caps{true, true, false};
  caps.nhwc = true;
  EXPECT_EQ(compile_plan(build_resnet50(10), caps, true, true).layout, Layout::nhwc);
  EXPECT_EQ(compile_plan(build_mlp(1, 28, 28, {128}, 10), caps, true, true).layout, Layout::nhwc);
  EXPECT_EQ(compile_plan(build_mlp(3, 8, 8, {16}, 10), caps, true, true).layout, Layout::nchw);
  caps.nhwc = false;
  EXPECT_EQ(compile_plan(build_resnet50(10), caps, true, true).layout, Layout::nchw);
}

}  // namespace
}  // namespace tb
