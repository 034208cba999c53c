// The IDX reader (read_idx: Fashion-MNIST's files), gzip'd or plain. The input holds both files:
// a little-endian u16 n, n bytes of the labels file, then the images file.
#include <algorithm>

#include "data/idx.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t n = std::min<size_t>(data[0] | data[1] << 8, size - 2);
  const tb::fuzz::MemFile labels(data + 2, n), images(data + 2 + n, size - 2 - n);
  tb::fuzz::expect_ok_or_error([&] {
    const tb::Dataset d = tb::read_idx(images.path(), labels.path(), "fuzz", 10);
    tb::fuzz::check(d.count > 0 && d.images.size() == uint64_t(d.count) * d.height * d.width &&
                        d.labels.size() == uint64_t(d.count),
                    "a data set read whole");
    for (uint8_t l : d.labels) tb::fuzz::check(l < 10, "labels below classes");
  });
  return 0;
}
