#include "models/model.h"
#include "models/cost.h"

#include <gtest/gtest.h>

namespace tb {

TEST(Model, MlpShapesAndCounts) {
  Model m = build_mlp(1, 28, 28, {128}, 10);
  ASSERT_EQ(m.nodes.size(), 4u);  // input, dense1, relu1, dense2
  EXPECT_EQ(m.param_count, 784 * 128 + 128 + 128 * 10 + 10);
  EXPECT_EQ(m.macs_per_image(), 784 * 128 + 128 * 10);
  // First layer: forward + weight gradient; second: forward + both gradients (WORKLOADS.md).
  EXPECT_DOUBLE_EQ(train_flops_per_image(m), 2.0 * (2 * 784 * 128 + 3 * 128 * 10));
}

TEST(Model, ResNet50MatchesTorchvision) {
  Model m = build_resnet50(10);
  // WORKLOADS.md: torchvision resnet50(num_classes=10) at 32x32.
  EXPECT_EQ(m.param_count, 23528522);
  EXPECT_EQ(m.macs_per_image(), 83431424);
  EXPECT_EQ(m.conv_macs_per_image(), 83410944);
  // 53 convolutions (49 + 4 projections), 53 batch norms, 16 residual adds.
  int convs = 0, bns = 0, adds = 0;
  for (const Node& n : m.nodes) {
    convs += n.kind == OpKind::conv2d;
    bns += n.kind == OpKind::batchnorm;
    adds += n.kind == OpKind::add;
  }
  EXPECT_EQ(convs, 53);
  EXPECT_EQ(bns, 53);
  EXPECT_EQ(adds, 16);
  EXPECT_EQ(m.output().c, 10);
  EXPECT_EQ(m.state_count, 2 * 26560);  // running mean + var of every BN channel
}

TEST(Model, SummaryListsEveryNode) {
  Model m = build_mlp(1, 28, 28, {128}, 10);
  const std::string s = m.summary();
  EXPECT_NE(s.find("dense1"), std::string::npos);
  EXPECT_NE(s.find("101770 parameters"), std::string::npos);
}

}  // namespace tb
