// The CIFAR-10 binary reader: one batch file's records (a label byte, 3072 pixel bytes).
#include <cstring>

#include "data/cifar.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tb::fuzz::expect_ok_or_error([&] {
    tb::Dataset d;
    tb::append_cifar_records(data, size, "fuzz.bin", d);
    constexpr size_t kRecord = 3073, kPixels = 3072;
    tb::fuzz::check(d.count > 0 && size == uint64_t(d.count) * kRecord &&
                        d.labels.size() == uint64_t(d.count) &&
                        d.images.size() == uint64_t(d.count) * kPixels,
                    "every record read");
    for (size_t r = 0; r < d.labels.size(); r++)
      tb::fuzz::check(d.labels[r] == data[r * kRecord] && d.labels[r] <= 9 &&
                          std::memcmp(&d.images[r * kPixels], data + r * kRecord + 1, kPixels) == 0,
                      "records copied as they are");
  });
  return 0;
}
