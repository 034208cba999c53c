#include "bench/flops.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tb {
namespace {

// fashion-mlp: 784 -> 128 -> 10, per image.
TEST(Flops, MlpTrainingRuleHandComputed) {
  const TrainingFlops t = training_flops(
      {{"dense1", dense_flops(784, 128), true}, {"dense2", dense_flops(128, 10), false}});
  // MACs: 784*128 = 100352 and 128*10 = 1280.
  EXPECT_DOUBLE_EQ(t.forward, 2.0 * (100352 + 1280));  // 203264
  EXPECT_DOUBLE_EQ(t.forward, 203264);
  // First layer: forward + weight gradient only (2x); second: forward + 2 gradients (3x).
  EXPECT_DOUBLE_EQ(t.train(), 2.0 * 100352 * 2 + 3.0 * 2 * 1280);  // 409088
  EXPECT_DOUBLE_EQ(t.train(), 409088);
  ASSERT_EQ(t.layers.size(), 2u);
  EXPECT_EQ(t.layers[0].name, "dense1");
  EXPECT_DOUBLE_EQ(t.layers[0].backward, 200704);
  EXPECT_DOUBLE_EQ(t.layers[1].backward, 5120);
  EXPECT_DOUBLE_EQ(t.backward, 205824);
}

TEST(Flops, ConvFormula) {
  // ResNet-50 stem at 32x32: 3 -> 64, 7x7, stride 2 -> 16x16 output.
  EXPECT_DOUBLE_EQ(conv2d_flops(3, 64, 7, 7, 16, 16), 2.0 * 64 * 256 * 3 * 49);
  // Depthwise: groups = channels.
  EXPECT_DOUBLE_EQ(conv2d_flops(32, 32, 3, 3, 8, 8, 32), 2.0 * 32 * 64 * 1 * 9);
}

TEST(Flops, MfuArithmetic) {
  EXPECT_DOUBLE_EQ(mfu(494.7e12, 989.4e12), 0.5);
  EXPECT_DOUBLE_EQ(mfu(0, 1e12), 0);
  EXPECT_TRUE(std::isnan(mfu(1e12, std::nullopt)));  // unknown peak: no number
  EXPECT_TRUE(std::isnan(mfu(1e12, 0.0)));
}

TEST(Flops, EmptyModel) {
  const TrainingFlops t = training_flops({});
  EXPECT_EQ(t.train(), 0);
  EXPECT_TRUE(t.layers.empty());
}

}  // namespace
}  // namespace tb
