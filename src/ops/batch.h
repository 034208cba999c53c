// Cutting a training batch out of the uint8 data set: gather the images that the epoch's
// permutation names, scale to [0, 1], normalise per channel, and (optionally) augment with a
// random crop from the image padded by `pad` zeros and a horizontal flip.
// Randomness is counter-based (hash of seed and image position), so every backend cuts the same
// batch for the same seed and nothing carries state between calls.
#pragma once
#include <cstdint>

namespace tb {

struct BatchSpec {
  int64_t n = 0;  // images in this batch
  int channels = 1, height = 28, width = 28;
  float scale = 1.f / 255.f;
  float mean[4] = {0, 0, 0, 0};
  float inv_std[4] = {1, 1, 1, 1};
  bool augment = false;
  int pad = 4;
  uint64_t seed = 0;  // differs per batch
  // How many indices after this batch's n are valid: a backend may start fetching those images
  // (the CPU prefetches them into cache while the step computes). 0 = none.
  int64_t lookahead = 0;
};

// A small stateless hash (splitmix64) used for augmentation choices.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

namespace ref {
// images: [count, c, h, w] u8; indices: n positions into it. x: [n, c, h, w] f32, y: [n] i32.
void gather_batch(const BatchSpec& s, const uint8_t* images, const uint8_t* labels,
                  const int32_t* indices, float* x, int32_t* y);
}  // namespace ref

}  // namespace tb
