// JPEG and PNG decoding as the image-folder reader does it: one 32x32 RGB image into CHW planes.
// The first byte chooses what the target does to the rest: odd, rewrite the CRC-32 of every PNG
// chunk (so that mutated chunks reach libpng's parsing instead of its checksum test); even,
// nothing.
#include <zlib.h>

#include <vector>

#include "data/image.h"
#include "fuzz_util.h"

namespace {

uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

// Chunks after the 8-byte signature: length, type, data, CRC of type and data.
void fix_png_crcs(std::vector<uint8_t>& png) {
  for (size_t at = 8; at + 12 <= png.size();) {
    const uint64_t len = be32(&png[at]);
    if (at + 12 + len > png.size()) break;
    const uint32_t crc = uint32_t(crc32(0, &png[at + 4], uInt(4 + len)));
    for (int i = 0; i < 4; i++) png[at + 8 + len + i] = uint8_t(crc >> (24 - 8 * i));
    at += 12 + len;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::vector<uint8_t> bytes(data + 1, data + size);
  if (data[0] & 1) fix_png_crcs(bytes);
  static uint8_t chw[3 * 32 * 32];
  tb::fuzz::expect_ok_or_error(
      [&] { tb::decode_rgb_image(bytes.data(), bytes.size(), 32, 32, chw, "fuzz.img"); });
  return 0;
}
