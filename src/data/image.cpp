#include "data/image.h"

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/error.h"

// Both libraries report errors by longjmp. The decode functions below therefore keep no C++
// objects with destructors in their frames and return a reason in `why` instead of throwing.

namespace tb {
namespace {

constexpr size_t kWhy = 512, kLibMsg = 256;  // why = our prefix + the library's message

struct JpegErr {
  jpeg_error_mgr pub;  // first member: libjpeg hands back a pointer to it
  jmp_buf jmp;
  char msg[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_fatal(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErr*>(c->err);
  c->err->format_message(c, e->msg);
  longjmp(e->jmp, 1);
}

// libjpeg only warns about corrupt or cut-off data and fills the rest with gray: make it fatal,
// a silently gray image is a wrong number.
void jpeg_message(j_common_ptr c, int level) {
  if (level < 0) jpeg_fatal(c);
}

bool decode_jpeg(const uint8_t* data, size_t size, int h, int w, uint8_t* hwc, char* why) {
  jpeg_decompress_struct cinfo;
  JpegErr err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_fatal;
  err.pub.emit_message = jpeg_message;
  if (setjmp(err.jmp)) {
    jpeg_destroy_decompress(&cinfo);
    std::snprintf(why, kWhy, "cannot decode JPEG: %s", err.msg);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, (unsigned long)size);
  jpeg_read_header(&cinfo, TRUE);
  const char* bad = nullptr;
  if (cinfo.num_components == 1)
    bad = "grayscale JPEG, expected RGB";
  else if (cinfo.num_components != 3)
    bad = "JPEG has neither 1 nor 3 color components (CMYK?)";
  if (bad || int(cinfo.image_width) != w || int(cinfo.image_height) != h) {
    if (bad)
      std::snprintf(why, kWhy, "%s", bad);
    else
      std::snprintf(why, kWhy, "image is %ux%u pixels, expected %dx%d", cinfo.image_width,
                    cinfo.image_height, w, h);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = hwc + size_t(cinfo.output_scanline) * w * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

struct PngErr {
  jmp_buf jmp;
  char msg[kLibMsg];
};

struct PngSrc {
  const uint8_t* data;
  size_t size, at;
};

[[noreturn]] void png_fatal(png_structp png, png_const_charp msg) {
  auto* e = static_cast<PngErr*>(png_get_error_ptr(png));
  std::snprintf(e->msg, sizeof(e->msg), "%s", msg);
  longjmp(e->jmp, 1);
}

void png_warn(png_structp, png_const_charp) {}  // e.g. odd iCCP profiles: pixels are still right

void png_read_mem(png_structp png, png_bytep out, size_t n) {
  auto* s = static_cast<PngSrc*>(png_get_io_ptr(png));
  if (s->size - s->at < n) png_error(png, "file is cut off");
  std::memcpy(out, s->data + s->at, n);
  s->at += n;
}

// libpng allocates a chunk's declared length before reading it, and only warns when that length
// is absurd: walk the lengths first, so that a corrupt one of gigabytes is refused, not allocated.
bool png_chunks_fit(const uint8_t* data, size_t size, char* why) {
  for (size_t at = 8; size - at >= 8;) {
    const uint8_t* p = data + at;
    const uint64_t len = uint64_t(p[0]) << 24 | uint64_t(p[1]) << 16 | uint64_t(p[2]) << 8 | p[3];
    if (len > size - at - 8) {
      std::snprintf(why, kWhy,
                    "cannot decode PNG: chunk at byte %zu declares %llu bytes, %zu remain", at,
                    (unsigned long long)len, size - at - 8);
      return false;
    }
    if (std::memcmp(p + 4, "IEND", 4) == 0) break;
    at += 8 + len + std::min<size_t>(4, size - at - 8 - len);  // the CRC, when it is there
  }
  return true;
}

bool decode_png(const uint8_t* data, size_t size, int h, int w, uint8_t* hwc, png_bytep* rows,
                char* why) {
  if (!png_chunks_fit(data, size, why)) return false;
  PngErr err;
  PngSrc src{data, size, 0};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_fatal, png_warn);
  if (!png) return std::snprintf(why, kWhy, "out of memory"), false;
  png_infop info = png_create_info_struct(png);  // returns null rather than longjmp on failure
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return std::snprintf(why, kWhy, "out of memory"), false;
  }
  if (setjmp(err.jmp)) {
    png_destroy_read_struct(&png, &info, nullptr);
    std::snprintf(why, kWhy, "cannot decode PNG: %s", err.msg);
    return false;
  }
  png_set_read_fn(png, &src, png_read_mem);
  // Inflated text and ICC chunks: none of a real file outgrows the file or 1 MiB.
  png_set_chunk_malloc_max(png, std::max<size_t>(size, size_t(1) << 20));
  png_set_chunk_cache_max(png, 1000);
  png_read_info(png, info);
  png_uint_32 pw = png_get_image_width(png, info), ph = png_get_image_height(png, info);
  int type = png_get_color_type(png, info);
  const char* bad = nullptr;
  if (!(type & PNG_COLOR_MASK_COLOR)) bad = "grayscale PNG, expected RGB";
  if (bad || int(pw) != w || int(ph) != h) {
    if (bad)
      std::snprintf(why, kWhy, "%s", bad);
    else
      std::snprintf(why, kWhy, "image is %ux%u pixels, expected %dx%d", pw, ph, w, h);
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (png_get_bit_depth(png, info) == 16) png_set_scale_16(png);
  png_set_strip_alpha(png);  // as PIL's convert("RGB"): alpha is dropped, not composited
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_channels(png, info) != 3 || png_get_rowbytes(png, info) != size_t(w) * 3) {
    std::snprintf(why, kWhy, "PNG layout not supported (%d channels after conversion)",
                  png_get_channels(png, info));
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  for (int y = 0; y < h; y++) rows[y] = hwc + size_t(y) * w * 3;
  png_read_image(png, rows);
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

}  // namespace

void decode_rgb_image(const uint8_t* data, size_t size, int height, int width, uint8_t* chw,
                      const std::string& name) {
  static const uint8_t kJpegSig[3] = {0xff, 0xd8, 0xff};
  static const uint8_t kPngSig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  TB_CHECK(height > 0 && width > 0, "{}: bad expected size {}x{}", name, width, height);
  bool jpeg = size >= 3 && std::memcmp(data, kJpegSig, 3) == 0;
  bool png = size >= 8 && std::memcmp(data, kPngSig, 8) == 0;
  if (!jpeg && !png) fail("{}: not a JPEG or PNG file ({} bytes)", name, size);
  // Per-thread scratch: callers decode tens of thousands of images from an OpenMP loop.
  thread_local std::vector<uint8_t> hwc;
  thread_local std::vector<png_bytep> rows;
  hwc.resize(size_t(height) * width * 3);
  rows.resize(height);
  char why[kWhy] = "";
  bool ok = jpeg ? decode_jpeg(data, size, height, width, hwc.data(), why)
                 : decode_png(data, size, height, width, hwc.data(), rows.data(), why);
  if (!ok) fail("{}: {}", name, why);
  size_t plane = size_t(height) * width;
  for (size_t p = 0; p < plane; p++)
    for (size_t c = 0; c < 3; c++) chw[c * plane + p] = hwc[p * 3 + c];
}

}  // namespace tb
