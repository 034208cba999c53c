#include "data/idx.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/file.h"
#include "core/gzio.h"

namespace fs = std::filesystem;

namespace tb {
namespace {

constexpr uint32_t kMagicU8x1 = 0x00000801, kMagicU8x3 = 0x00000803;
// Bounds that no real data set reaches but that stop a corrupt header from asking for terabytes.
constexpr uint64_t kMaxCount = uint64_t(1) << 31, kMaxSide = 1 << 16,
                   kMaxImagePixels = uint64_t(1) << 24, kMaxTotalBytes = uint64_t(1) << 36;

uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

// Reads the magic and the dims of an IDX file and checks that it is u8 with `ndims` dimensions.
void read_header(gzFile f, const std::string& path, uint32_t want_magic, uint32_t* dims,
                 const char* what) {
  uint8_t h[4];
  size_t n = gzio::read_some(f, h, 4, path);
  if (n < 4) fail("{}: too short for an IDX header ({} bytes)", path, n);
  uint32_t magic = be32(h);
  uint32_t ndims = want_magic & 0xff;
  if (magic != want_magic) {
    if (h[0] == 0 && h[1] == 0 && h[2] == 0x08 && h[3] != ndims)
      fail("{}: IDX file has {} dimension(s), expected {} for {}", path, h[3], ndims, what);
    if (h[0] == 0 && h[1] == 0 && (h[2] >= 0x08 && h[2] <= 0x0e))
      fail("{}: IDX element type is 0x{:02x}, expected 0x08 (unsigned byte)", path, h[2]);
    fail("{}: not an IDX file{} (magic 0x{:08x}, expected 0x{:08x} for {})", path,
         gzdirect(f) ? " and not gzip-compressed" : "", magic, want_magic, what);
  }
  uint8_t d[12];
  n = gzio::read_some(f, d, 4 * ndims, path);
  if (n < 4 * ndims) fail("{}: IDX header cut off after {} bytes", path, 4 + n);
  for (uint32_t i = 0; i < ndims; i++) dims[i] = be32(d + 4 * i);
}

// Reads exactly n data bytes, then checks that nothing follows them.
std::vector<uint8_t> read_body(gzFile f, const std::string& path, uint64_t n) {
  if (const uint64_t most = gzio::most_left(f, path); n > most)
    fail("{}: truncated: header declares {} data bytes but the file can hold at most {}", path, n,
         most);
  std::vector<uint8_t> out;
  gzio::read_grow(f, out, n, path);
  if (out.size() < n)
    fail("{}: truncated: header declares {} data bytes but the file has {}", path, n, out.size());
  uint8_t extra[1 << 12];
  uint64_t trailing = 0;
  while (size_t got = gzio::read_some(f, extra, sizeof(extra), path)) trailing += got;
  if (trailing)
    fail("{}: {} trailing bytes after the {} data bytes the header declares", path, trailing, n);
  return out;
}

void write_gz_atomic(const std::string& path, const uint8_t* header, size_t header_size,
                     const std::vector<uint8_t>& body) {
  write_file_atomic(path, [&](const std::string& tmp) {
    gzFile f = gzopen(tmp.c_str(), "wb6");
    if (!f) return false;
    bool ok = gzwrite(f, header, unsigned(header_size)) == int(header_size);
    for (size_t at = 0; ok && at < body.size();) {
      unsigned chunk = unsigned(std::min<size_t>(body.size() - at, size_t(1) << 30));
      ok = gzwrite(f, body.data() + at, chunk) == int(chunk);
      at += chunk;
    }
    return (gzclose(f) == Z_OK) && ok;
  });
}

void put_be32(uint8_t* p, uint64_t v) {
  p[0] = uint8_t(v >> 24), p[1] = uint8_t(v >> 16), p[2] = uint8_t(v >> 8), p[3] = uint8_t(v);
}

}  // namespace

Dataset read_idx(const std::string& images_path, const std::string& labels_path,
                 const std::string& name, int classes) {
  TB_CHECK(classes > 0 && classes <= 256, "{}: classes must be in 1..256, got {}", name, classes);
  Dataset d;
  d.name = name;
  d.source = images_path;
  d.classes = classes;
  d.channels = 1;

  uint32_t dims[3];
  {
    gzio::GzPtr f = gzio::open_read(images_path);
    read_header(f.get(), images_path, kMagicU8x3, dims, "images");
    uint64_t count = dims[0], rows = dims[1], cols = dims[2];
    if (count == 0 || rows == 0 || cols == 0)
      fail("{}: IDX dimensions {}x{}x{} contain a zero", images_path, count, rows, cols);
    if (count > kMaxCount || rows > kMaxSide || cols > kMaxSide || rows * cols > kMaxImagePixels ||
        count * rows * cols > kMaxTotalBytes)
      fail("{}: IDX dimensions {}x{}x{} are implausibly large (corrupt header?)", images_path,
           count, rows, cols);
    d.count = int64_t(count);
    d.height = int(rows);
    d.width = int(cols);
    d.images = read_body(f.get(), images_path, count * rows * cols);
  }
  {
    gzio::GzPtr f = gzio::open_read(labels_path);
    read_header(f.get(), labels_path, kMagicU8x1, dims, "labels");
    if (dims[0] != uint64_t(d.count))
      fail("{}: has {} labels but {} has {} images", labels_path, dims[0], images_path, d.count);
    d.labels = read_body(f.get(), labels_path, dims[0]);
  }
  for (int64_t i = 0; i < d.count; i++)
    if (d.labels[i] >= classes)
      fail("{}: label {} at index {} is out of range (classes = {})", labels_path, d.labels[i], i,
           classes);
  return d;
}

DatasetPair load_fashion_mnist(const std::string& dir_arg) {
  std::string dir = dir_arg.empty() ? kFashionMnistDir : dir_arg;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail(
        "fashion-mnist: directory {} not found; install it with `apt-get install "
        "dataset-fashion-mnist` or pass --data DIR (a folder with the 4 *-ubyte.gz files)",
        dir);
  // Each file as distributed (*.gz) or unpacked (read_idx reads both); the .gz name in errors.
  auto p = [&](const char* f) {
    const fs::path gz = fs::path(dir) / (std::string(f) + ".gz"), plain = fs::path(dir) / f;
    return (!fs::exists(gz, ec) && fs::is_regular_file(plain, ec) ? plain : gz).string();
  };
  DatasetPair out;
  out.train =
      read_idx(p("train-images-idx3-ubyte"), p("train-labels-idx1-ubyte"), "fashion-mnist", 10);
  out.test =
      read_idx(p("t10k-images-idx3-ubyte"), p("t10k-labels-idx1-ubyte"), "fashion-mnist", 10);
  if (out.train.height != out.test.height || out.train.width != out.test.width)
    fail("fashion-mnist: train images are {}x{} but test images are {}x{} in {}", out.train.height,
         out.train.width, out.test.height, out.test.width, dir);
  return out;
}

void write_idx(const Dataset& d, const std::string& images_path, const std::string& labels_path) {
  TB_CHECK(d.channels == 1, "write_idx {}: IDX images need channels == 1, got {}", images_path,
           d.channels);
  TB_CHECK(d.count > 0 && d.height > 0 && d.width > 0, "write_idx {}: empty data set {}x{}x{}",
           images_path, d.count, d.height, d.width);
  TB_CHECK(
      d.images.size() == uint64_t(d.count * d.image_size()) && d.labels.size() == uint64_t(d.count),
      "write_idx {}: {} image bytes and {} labels do not match count {} of {}x{}", images_path,
      d.images.size(), d.labels.size(), d.count, d.height, d.width);
  uint8_t h[16];
  put_be32(h, kMagicU8x3);
  put_be32(h + 4, uint64_t(d.count));
  put_be32(h + 8, uint64_t(d.height));
  put_be32(h + 12, uint64_t(d.width));
  write_gz_atomic(images_path, h, 16, d.images);
  put_be32(h, kMagicU8x1);
  write_gz_atomic(labels_path, h, 8, d.labels);
}

}  // namespace tb
