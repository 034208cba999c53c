// An image classification data set held in memory as uint8, exactly as it was read.
// Normalisation (scale, per-channel mean/std) is applied when batches are cut, on the device.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace tb {

struct Dataset {
  std::string name;    // "fashion-mnist", "cifar10"
  std::string source;  // the path it was read from
  int64_t count = 0;   // number of images
  int channels = 0, height = 0, width = 0;
  int classes = 0;
  std::vector<uint8_t> images;  // count x channels x height x width (CHW planes per image)
  std::vector<uint8_t> labels;  // count, each < classes

  int64_t image_size() const { return int64_t(channels) * height * width; }
};

struct DatasetPair {
  Dataset train, test;
};

// n of d's images spread evenly over it (a sampled test pass): a file sorted by class (the
// image-folder conversion writes one class after another) still gives each class its share.
inline Dataset evenly_spaced(const Dataset& d, int64_t n) {
  Dataset s = d;
  s.count = std::min(n, d.count);
  const size_t size = size_t(d.image_size());
  for (int64_t i = 0; i < s.count; ++i) {
    const int64_t from = i * d.count / s.count;
    std::copy_n(d.images.begin() + from * size, size, s.images.begin() + i * size);
    s.labels[i] = d.labels[from];
  }
  s.images.resize(s.count * size), s.labels.resize(s.count);
  return s;
}

}  // namespace tb
