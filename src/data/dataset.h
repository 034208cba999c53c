// An image classification data set held in memory as uint8, exactly as it was read.
// Normalisation (scale, per-channel mean/std) is applied when batches are cut, on the device.
#pragma once
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

}  // namespace tb
