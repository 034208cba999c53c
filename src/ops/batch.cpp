#include "ops/batch.h"

#include "core/error.h"

namespace tb::ref {

void gather_batch(const BatchSpec& s, const uint8_t* images, const uint8_t* labels,
                  const int32_t* indices, float* x, int32_t* y) {
  TB_CHECK(s.layout == Layout::nchw, "the reference ops take NCHW activations only");
  const int64_t plane = int64_t(s.height) * s.width, image = plane * s.channels;
  const BatchAt at = batch_at(s);
  indices += at.first;
  for (int64_t i = 0; i < s.n; ++i) {
    const uint8_t* src = images + int64_t(indices[i]) * image;
    float* dst = x + i * image;
    y[i] = labels[indices[i]];
    int dy = 0, dx = 0;
    bool flip = false;
    if (s.augment) {
      uint64_t r = mix64(at.seed ^ mix64(uint64_t(at.row + i)));
      const int span = 2 * s.pad + 1;
      dy = int(r % span) - s.pad;
      dx = int((r >> 16) % span) - s.pad;
      flip = (r >> 32) & 1;
    }
    for (int c = 0; c < s.channels; ++c)
      for (int h = 0; h < s.height; ++h)
        for (int w = 0; w < s.width; ++w) {
          // Output pixel (h, w) reads the padded image at (h + dy, w' + dx), w' mirrored if flip.
          const int sw = (flip ? s.width - 1 - w : w) + dx, sh = h + dy;
          float v = 0.f;
          if (sh >= 0 && sh < s.height && sw >= 0 && sw < s.width)
            v = src[c * plane + sh * s.width + sw] * s.scale;
          else
            v = 0.f;  // zero padding in pixel space, then normalised like any pixel
          dst[c * plane + h * s.width + w] = (v - s.mean[c]) * s.inv_std[c];
        }
  }
}

}  // namespace tb::ref
