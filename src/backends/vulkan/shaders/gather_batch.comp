#version 450
// ref::gather_batch on the device: a thread per output value; the batch's place and seed from
// the cursor when there is one (a training step), else indices[0 .. n) and pc.seed.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Words images;  // word-aligned; the data start images_off bytes in
  Words labels;
  Ints indices;
  Floats x;
  Ints y;
  Cursor cursor;  // 0: none
  uint64_t seed;
  uint n;
  uint channels;
  uint height;
  uint width;
  uint augment;
  int pad;
  uint images_off;
  uint labels_off;
  float scale;
  float mean[4];
  float inv_std[4];
} pc;

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ul;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ul;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebul;
  return x ^ (x >> 31);
}

void main() {
  uint first = 0u;
  uint64_t seed = pc.seed;
  if (uint64_t(pc.cursor) != 0ul) {
    Cursor c = pc.cursor;
    first = uint(c.step * c.stride);
    seed = mix64(c.seed ^ mix64((uint64_t(c.epoch) << 32) | uint64_t(c.step)));
  }
  const uint plane = pc.height * pc.width, image = plane * pc.channels, total = pc.n * image;
  const uint stride = gl_NumWorkGroups.x * 256u;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    const uint i = e / image, rem = e - i * image;
    const uint c = rem / plane, pix = rem - c * plane;
    const int h = int(pix / pc.width), w = int(pix - uint(h) * pc.width);
    const uint src = uint(pc.indices.v[first + i]);
    if (rem == 0u) pc.y.v[i] = int(byte_at(pc.labels, pc.labels_off, src));
    int dy = 0, dx = 0;
    bool flip = false;
    if (pc.augment != 0u) {
      const uint64_t r = mix64(seed ^ mix64(uint64_t(i)));
      const uint64_t span = uint64_t(2 * pc.pad + 1);
      dy = int(r % span) - pc.pad;
      dx = int((r >> 16) % span) - pc.pad;
      flip = ((r >> 32) & 1ul) != 0ul;
    }
    const int sw = (flip ? int(pc.width) - 1 - w : w) + dx, sh = h + dy;
    precise float v = 0.0;
    if (sh >= 0 && sh < int(pc.height) && sw >= 0 && sw < int(pc.width))
      v = float(byte_at(pc.images, pc.images_off,
                        src * image + c * plane + uint(sh) * pc.width + uint(sw))) *
          pc.scale;
    precise float normalised = (v - pc.mean[c]) * pc.inv_std[c];
    pc.x.v[e] = normalised;
  }
}
