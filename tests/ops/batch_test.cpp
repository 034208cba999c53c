// Cutting a batch: a training batch, where a StepCursor says, is the plain cut of the cursor's
// slice of the permutation with the cursor's seed; advancing the cursor moves to the next slice
// and a new seed.
#include "ops/batch.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <vector>

namespace tb {
namespace {

struct Set {
  std::vector<uint8_t> images, labels;
  std::vector<int32_t> indices;
};

Set make_set(int64_t count, int64_t image, int64_t indices) {
  Set s;
  std::mt19937 rng(42);
  s.images.resize(size_t(count * image));
  for (auto& v : s.images) v = uint8_t(rng() & 255);
  for (int64_t i = 0; i < count; ++i) s.labels.push_back(uint8_t(rng() % 10));
  for (int64_t i = 0; i < indices; ++i) s.indices.push_back(int32_t(rng() % count));
  return s;
}

TEST(Batch, CursorCutsItsSliceWithItsSeed) {
  const int64_t n = 5, image = 3 * 8 * 8;
  const Set set = make_set(40, image, 3 * n + 2);  // an epoch of 3 full batches and one of 2
  BatchSpec s;
  s.n = n, s.channels = 3, s.height = s.width = 8, s.augment = true, s.pad = 2;
  StepCursor c;
  c.stride = n, c.count = int64_t(set.indices.size()), c.epoch = 3, c.seed = 1234;
  std::set<uint64_t> seeds;
  for (int64_t step = 0; step < 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    ASSERT_EQ(c.step, step);
    BatchSpec at = s;
    at.cursor = &c;
    at.seed = 999;  // not read when a cursor is set
    std::vector<float> x(size_t(n * image)), want_x(x.size());
    std::vector<int32_t> y(static_cast<size_t>(n)), want_y(y.size());
    ref::gather_batch(at, set.images.data(), set.labels.data(), set.indices.data(), x.data(),
                      y.data());
    BatchSpec plain = s;
    plain.seed = step_seed(c);
    ref::gather_batch(plain, set.images.data(), set.labels.data(), set.indices.data() + step * n,
                      want_x.data(), want_y.data());
    EXPECT_EQ(x, want_x);
    EXPECT_EQ(y, want_y);
    const BatchAt where = batch_at(at);
    EXPECT_EQ(where.first, step * n);
    EXPECT_EQ(where.lookahead, step < 2 ? n : 2) << "valid indices after the batch, at most n";
    seeds.insert(where.seed);
    advance(c);
  }
  EXPECT_EQ(seeds.size(), 3u) << "each step has its own seed";
  EXPECT_EQ(c.updates, 3);
  StepCursor next_epoch = c;
  next_epoch.step = 0, next_epoch.epoch = 4;
  StepCursor first_epoch = c;
  first_epoch.step = 0;
  EXPECT_NE(step_seed(next_epoch), step_seed(first_epoch)) << "and each epoch";
}

TEST(Batch, NoCursorCutsFromTheStart) {
  BatchSpec s;
  s.n = 4, s.seed = 77;
  const BatchAt at = batch_at(s);
  EXPECT_EQ(at.first, 0);
  EXPECT_EQ(at.seed, 77u);
  EXPECT_EQ(at.lookahead, 0);
}

}  // namespace
}  // namespace tb
