// Small made-up data sets for training tests, train and test drawn alike: synthetic() has 10
// classes, each a noisy brightness pattern, learnable in a few steps; random_images() is noise.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "data/dataset.h"

namespace tb::testing {

inline DatasetPair synthetic(int count, int c, int h, int w, uint64_t seed) {
  DatasetPair d;
  std::mt19937_64 rng(seed);
  for (Dataset* s : {&d.train, &d.test}) {
    s->name = "synthetic";
    s->count = count, s->channels = c, s->height = h, s->width = w, s->classes = 10;
    s->images.resize(size_t(count) * c * h * w);
    s->labels.resize(size_t(count));
    for (int i = 0; i < count; ++i) {
      const int label = int(rng() % 10);
      s->labels[i] = uint8_t(label);
      for (int j = 0; j < c * h * w; ++j)
        s->images[size_t(i) * c * h * w + j] =
            uint8_t(((j % 10) == label ? 200 : 30) + int(rng() % 40));
    }
  }
  return d;
}

// Random side x side RGB images with random labels (nothing to learn: for comparing backends).
inline DatasetPair random_images(int64_t count, uint32_t seed, int side = 16) {
  DatasetPair data;
  std::mt19937 rng(seed);
  for (Dataset* s : {&data.train, &data.test}) {
    s->name = "synthetic", s->count = count, s->channels = 3, s->height = side, s->width = side;
    s->classes = 10;
    s->images.resize(size_t(count * 3 * side * side)), s->labels.resize(size_t(count));
    for (auto& v : s->images) v = uint8_t(rng() & 255);
    for (auto& v : s->labels) v = uint8_t(rng() % 10);
  }
  return data;
}

// What a fused MLP step cuts its batches from: count random images of `pixels` values, labels
// below `classes`, and a shuffled order of them (the epoch's permutation).
struct MlpStepSource {
  std::vector<uint8_t> images, labels;
  std::vector<int32_t> order;
};
inline MlpStepSource mlp_step_source(int64_t count, int64_t pixels, int classes, uint32_t seed) {
  MlpStepSource s;
  std::mt19937 rng(seed);
  s.images.resize(size_t(count * pixels)), s.labels.resize(size_t(count));
  for (auto& v : s.images) v = uint8_t(rng() & 255);
  for (auto& v : s.labels) v = uint8_t(rng() % uint32_t(classes));
  s.order.resize(size_t(count));
  std::iota(s.order.begin(), s.order.end(), 0);
  std::shuffle(s.order.begin(), s.order.end(), rng);
  return s;
}

}  // namespace tb::testing
