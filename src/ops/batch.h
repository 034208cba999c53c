// Cutting a training batch out of the uint8 data set: gather the images that the epoch's
// permutation names, scale to [0, 1], normalise per channel, and (optionally) augment with a
// random crop from the image padded by `pad` zeros and a horizontal flip.
// Randomness is counter-based (hash of seed and image position), so every backend cuts the same
// batch for the same seed and nothing carries state between calls.
#pragma once
#include <cstdint>

#include "core/dtype.h"

// Functions that CUDA kernels call too.
#ifdef __CUDACC__
#define TB_HOST_DEVICE __host__ __device__
#else
#define TB_HOST_DEVICE
#endif

namespace tb {

// Where training is, kept in device memory beside the buffers. A training step's data cut reads
// its batch offset and seed from here, the optimizer its update count, and the step's last op
// advances it; so every op of a step has the same arguments at every step, and a step recorded
// once (a CUDA graph) replays unchanged, data and optimizer included. The host writes it at the
// start of each epoch (with the new permutation) and otherwise only mirrors it.
struct StepCursor {
  int64_t step = 0;     // the step within the epoch: its images start at indices[step * stride]
  int64_t stride = 0;   // images per full step
  int64_t count = 0;    // indices in the epoch's permutation
  int64_t updates = 0;  // optimizer updates before this step (Adam's t is updates + 1)
  int64_t epoch = 0;
  uint64_t seed = 0;  // the run's seed; a step's augmentation seed is step_seed(cursor)
  // Data-parallel ranks: this rank cuts rows [n * rank / ranks, n * (rank + 1) / ranks) of each
  // step's n images (the last, partial batch too), from the permutation every rank shares.
  int32_t rank = 0, ranks = 1;
};

// The step's last op: the next step of the epoch, one more optimizer update.
TB_HOST_DEVICE inline void advance(StepCursor& c) {
  c.step++;
  c.updates++;
}

// A small stateless hash (splitmix64) used for augmentation choices.
TB_HOST_DEVICE inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The augmentation seed of the cursor's step: differs per epoch and step.
TB_HOST_DEVICE inline uint64_t step_seed(const StepCursor& c) {
  return mix64(c.seed ^ mix64((uint64_t(c.epoch) << 32) | uint64_t(c.step)));
}

struct BatchSpec {
  int64_t n = 0;  // images in this batch
  int channels = 1, height = 28, width = 28;
  float scale = 1.f / 255.f;
  float mean[4] = {0, 0, 0, 0};
  float inv_std[4] = {1, 1, 1, 1};
  bool augment = false;
  int pad = 4;
  uint64_t seed = 0;  // differs per batch
  // A training batch: `cursor` (device memory) says where it is. The batch is then
  // indices[step * stride ..] and its seed step_seed(*cursor); `seed` is not read. Null: the
  // batch is indices[0 .. n) with `seed` (evaluation, tests).
  const StepCursor* cursor = nullptr;
  Layout layout = Layout::nchw;  // of x: [n, c, h, w] or [n, h, w, c]
};

// The index of the batch's first image, the seed and, read by the host-side backends that
// prefetch, how many indices after the batch's n are valid; `row`: the first image's row in the
// whole step's batch (a rank's shard starts inside it), so augmentation draws what one process
// would for that image. Only where s.cursor is readable here (host memory, or device code).
struct BatchAt {
  int64_t first = 0;
  uint64_t seed = 0;
  int64_t lookahead = 0;
  int64_t row = 0;
};
TB_HOST_DEVICE inline BatchAt batch_at(const BatchSpec& s) {
  if (!s.cursor) return {0, s.seed, 0, 0};
  const StepCursor& c = *s.cursor;
  const int64_t step_first = c.step * c.stride;
  const int64_t step_n = c.count - step_first < c.stride ? c.count - step_first : c.stride;
  const int64_t row = step_n * c.rank / c.ranks, first = step_first + row;
  const int64_t after = c.count - first - s.n;
  return {first, step_seed(c), after < c.stride ? (after > 0 ? after : 0) : c.stride, row};
}

// Rank `rank` of `ranks`'s share of a step of n images (what batch_at cuts for it).
TB_HOST_DEVICE inline int64_t shard_count(int64_t n, int rank, int ranks) {
  return n * (rank + 1) / ranks - n * rank / ranks;
}

namespace ref {
// images: [count, c, h, w] u8; indices: positions into it (from batch_at(s).first when s.cursor
// is set). x: [n, c, h, w] f32, y: [n] i32.
void gather_batch(const BatchSpec& s, const uint8_t* images, const uint8_t* labels,
                  const int32_t* indices, float* x, int32_t* y);
}  // namespace ref

}  // namespace tb
