// Internal: small zlib helpers shared by the IDX and tar readers and the record readers.
// gzopen/gzread read gzip and plain files alike, so one code path serves both; every failure
// becomes a tb::Error naming the file.
#pragma once
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace tb::gzio {

struct GzClose {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzPtr = std::unique_ptr<gzFile_s, GzClose>;

// Checks first so that a missing file or a directory gets a clear message, not a zlib one.
inline GzPtr open_read(const std::string& path) {
  std::error_code ec;
  auto st = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(st)) fail("{}: file not found", path);
  if (std::filesystem::is_directory(st)) fail("{}: is a directory, expected a file", path);
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) fail("{}: cannot open: {}", path, std::strerror(errno));
  gzbuffer(f, 1 << 17);  // fewer syscalls on the 26 MB Fashion-MNIST images
  return GzPtr(f);
}

// Reads up to n bytes; returns how many were read (fewer only at end of data). A corrupt or
// truncated gzip stream is an error, not a short read.
inline size_t read_some(gzFile f, void* buf, size_t n, const std::string& path) {
  size_t got = 0;
  auto* p = static_cast<uint8_t*>(buf);
  while (got < n) {
    unsigned chunk = unsigned(std::min<size_t>(n - got, size_t(1) << 30));
    int r = gzread(f, p + got, chunk);
    if (r < 0) {
      int code = 0;
      const char* msg = gzerror(f, &code);
      fail("{}: read error: {}", path, code == Z_ERRNO ? std::strerror(errno) : msg);
    }
    if (r == 0) break;
    got += size_t(r);
  }
  if (got < n) {
    // gzread returns the bytes it has before reporting a cut-off stream; ask explicitly.
    int code = 0;
    const char* msg = gzerror(f, &code);
    if (code != Z_OK) fail("{}: gzip data is cut off or corrupt: {}", path, msg);
  }
  return got;
}

// The most bytes f can still yield: what is left of a plain file, or 1032 times a gzip file's
// size (deflate's densest code puts 258 bytes in 2 bits). The readers hold a header's declared
// sizes against it, so that a lying header is refused before anything is allocated for it.
inline uint64_t most_left(gzFile f, const std::string& path) {
  constexpr uint64_t kMaxDeflateRatio = 1032;
  std::error_code ec;
  const uint64_t file_bytes = std::filesystem::file_size(path, ec);
  if (ec) return UINT64_MAX;  // the reads will say what is wrong
  const uint64_t most = gzdirect(f) ? file_bytes : file_bytes * kMaxDeflateRatio;
  const uint64_t done = uint64_t(std::max<z_off_t>(gztell(f), 0));
  return most > done ? most - done : 0;
}

// Reads up to n bytes into out (resized to what was read). Grows in chunks so that a header that
// lies about a huge size fails on the missing data, not on allocating it.
inline void read_grow(gzFile f, std::vector<uint8_t>& out, uint64_t n, const std::string& path) {
  constexpr uint64_t kChunk = uint64_t(64) << 20;
  out.clear();
  while (out.size() < n) {
    size_t at = out.size(), want = size_t(std::min(kChunk, n - at));
    out.resize(at + want);
    size_t got = read_some(f, out.data() + at, want, path);
    if (got < want) {
      out.resize(at + got);
      return;
    }
  }
}

// A whole plain or gzip file as text (records and profiles: `--out` writes them plain, the large
// ones under bench/results are kept gzipped). More than max_bytes is refused without reading on,
// so a small gzip file cannot inflate into all of memory.
inline std::string read_text(const std::string& path, uint64_t max_bytes) {
  GzPtr f = open_read(path);
  std::vector<uint8_t> bytes;
  read_grow(f.get(), bytes, max_bytes + 1, path);
  if (bytes.size() > max_bytes) fail("{}: larger than {} MiB", path, max_bytes >> 20);
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace tb::gzio
