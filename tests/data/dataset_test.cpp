// The sampled test pass's subset: spread over the set, so a class-sorted file gives every class
// its share and each image stays with its label.
#include "data/dataset.h"

#include <gtest/gtest.h>

#include <vector>

namespace tb {
namespace {

TEST(Dataset, EvenlySpacedSampleKeepsEveryClass) {
  Dataset d;
  d.count = 1000, d.channels = 1, d.height = 1, d.width = 2, d.classes = 10;
  for (int i = 0; i < 1000; ++i) {
    d.labels.push_back(uint8_t(i / 100));  // sorted by class, 100 each
    d.images.push_back(uint8_t(i % 256)), d.images.push_back(uint8_t(i / 100));
  }
  const Dataset s = evenly_spaced(d, 50);
  ASSERT_EQ(s.count, 50);
  ASSERT_EQ(s.images.size(), 100u);
  std::vector<int> per_class(10, 0);
  for (int i = 0; i < 50; ++i) {
    per_class[s.labels[i]]++;
    EXPECT_EQ(s.images[2 * i + 1], s.labels[i]);  // the image that had this label
    EXPECT_EQ(s.images[2 * i], uint8_t((i * 20) % 256));
  }
  EXPECT_EQ(per_class, std::vector<int>(10, 5));
  EXPECT_EQ(evenly_spaced(d, 5000).count, 1000);  // asking for more takes them all
}

}  // namespace
}  // namespace tb
