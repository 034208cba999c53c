#include "models/cost.h"

#include <gtest/gtest.h>

#include "report/record.h"

namespace tb {
namespace {

// fashion-mlp: 784 -> 128 -> 10, per image, by hand.
TEST(Cost, MlpTrainingRuleHandComputed) {
  const Model m = build_mlp(1, 28, 28, {128}, 10);
  // MACs: 784*128 = 100352 and 128*10 = 1280.
  EXPECT_DOUBLE_EQ(forward_flops_per_image(m), 203264);
  // First layer: forward + weight gradient only (2x); second: forward + 2 gradients (3x).
  EXPECT_DOUBLE_EQ(train_flops_per_image(m), 2.0 * 100352 * 2 + 3.0 * 2 * 1280);  // 409088
  EXPECT_DOUBLE_EQ(node_cost(m, 1, 1).flops_backward, 200704);
  EXPECT_DOUBLE_EQ(node_cost(m, 3, 1).flops_backward, 5120);
  EXPECT_DOUBLE_EQ(node_cost(m, 2, 1).flops(), 0);  // ReLU: not counted
}

TEST(Cost, ResNet50MatchesTheContract) {
  const Model m = build_resnet50(10);
  ASSERT_EQ(m.nodes[1].kind, OpKind::conv2d);  // the stem: 3 -> 64, 7x7 stride 2, 32 -> 16
  EXPECT_DOUBLE_EQ(node_cost(m, 1, 2).flops_forward, 2.0 * 64 * 16 * 16 * 3 * 7 * 7 * 2);
  EXPECT_DOUBLE_EQ(node_cost(m, 1, 2).flops_backward, node_cost(m, 1, 2).flops_forward);
  EXPECT_DOUBLE_EQ(forward_flops_per_image(m), 2.0 * 83431424);  // WORKLOADS.md at 32x32
}

TEST(Cost, DenseBytesByHand) {
  const Model m = build_mlp(1, 28, 28, {128}, 10);
  const double x = 32 * 784, y = 32 * 128, w = 784 * 128 + 128;
  // Forward: x, W, y. Backward: dy, x, W, dW (no dx: the input gets no gradient).
  EXPECT_DOUBLE_EQ(node_cost(m, 1, 32).bytes(), 4 * ((x + w + y) + (y + x + w + w)));
  // fc2 reads 128 and writes 10 per image; its backward also writes dx.
  const double x2 = 32 * 128, y2 = 32 * 10, w2 = 128 * 10 + 10;
  EXPECT_DOUBLE_EQ(node_cost(m, 3, 32).bytes(), 4 * ((x2 + w2 + y2) + (y2 + x2 + w2 + x2 + w2)));
  EXPECT_DOUBLE_EQ(node_cost(m, 2, 32).bytes_backward, 4 * (y + y + y));
}

TEST(Cost, MfuArithmetic) {
  EXPECT_DOUBLE_EQ(*mfu(494.7e12, 989.4e12), 0.5);
  EXPECT_DOUBLE_EQ(*mfu(0, 1e12), 0);
  EXPECT_FALSE(mfu(1e12, std::nullopt));  // unknown peak: no number
  EXPECT_FALSE(mfu(1e12, 0.0));
}

// A datasheet estimate below what the machine measured or achieved is known to be low: the MFU
// is then against the measured peak, and no MFU above 100% is ever reported.
TEST(Cost, MfuNeverAboveOneAndALowDatasheetIsSaid) {
  const MfuFacts ok = mfu_facts(50e9, 166e9, 119e9);
  EXPECT_FALSE(ok.datasheet_low);
  EXPECT_DOUBLE_EQ(*ok.mfu, 50e9 / 166e9);
  EXPECT_DOUBLE_EQ(*ok.mfu_measured, 50e9 / 119e9);

  const MfuFacts beat = mfu_facts(175e9, 166e9, 230e9);  // the 105%
  EXPECT_TRUE(beat.datasheet_low);
  EXPECT_DOUBLE_EQ(*beat.mfu, 175e9 / 230e9);
  EXPECT_FALSE(beat.mfu_datasheet);  // 105%: not a number to print

  const MfuFacts measured_above = mfu_facts(100e9, 166e9, 200e9);
  EXPECT_TRUE(measured_above.datasheet_low);
  EXPECT_DOUBLE_EQ(*measured_above.mfu, 0.5);

  const MfuFacts both_low = mfu_facts(300e9, 166e9, 200e9);
  EXPECT_TRUE(both_low.datasheet_low);
  EXPECT_FALSE(both_low.mfu);
  EXPECT_FALSE(both_low.mfu_measured);

  const MfuFacts no_measured = mfu_facts(175e9, 166e9, std::nullopt);
  EXPECT_TRUE(no_measured.datasheet_low);
  EXPECT_FALSE(no_measured.mfu);
}

}  // namespace
}  // namespace tb
