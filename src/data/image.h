// Decoding of single JPEG (libjpeg-turbo, jpeglib.h) and PNG (libpng) images into CHW planes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace tb {

// Decodes a JPEG or PNG (told apart by signature, not by name) that must be exactly
// width x height RGB into chw (3 planes of height*width bytes). Grayscale, another size, an
// undecodable or truncated file, or any other format is a tb::Error whose message starts with name.
// Thread-safe: meant to be called from many threads at once.
void decode_rgb_image(const uint8_t* data, size_t size, int height, int width, uint8_t* chw,
                      const std::string& name);

}  // namespace tb
