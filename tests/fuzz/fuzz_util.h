// What the fuzz targets share: the rule they check, and an input held as a file for the readers
// that take a path (zlib's gz* functions read only files).
#pragma once
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"

namespace tb::fuzz {

// A bad input must end as a tb::Error with a one-line message. Any other exception escapes, and
// libFuzzer reports it (as a crash) along with what the sanitizers find.
template <typename F>
void expect_ok_or_error(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    const std::string m = e.what();
    if (m.empty() || m.find('\n') != std::string::npos) {
      std::fprintf(stderr, "tb::Error whose message is not one line: [%s]\n", m.c_str());
      std::abort();
    }
  }
}

// An oracle of a target: what a reader returned breaks a promise of its interface.
inline void check(bool ok, const char* promise) {
  if (!ok) {
    std::fprintf(stderr, "broken promise: %s\n", promise);
    std::abort();
  }
}

// The bytes in an anonymous in-memory file: a path to it, no file on disk.
class MemFile {
 public:
  MemFile(const uint8_t* data, size_t size) : fd_(memfd_create("fuzz-input", MFD_CLOEXEC)) {
    if (fd_ < 0 || !write_all(fd_, data, size)) {
      std::perror("memfd");
      std::abort();
    }
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_;
};

// The bytes as one gzip member (the targets that build a valid file around the fuzzer's bytes
// compress it themselves).
inline std::vector<uint8_t> gzip(const std::vector<uint8_t>& plain) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::vector<uint8_t> out(deflateBound(&z, plain.size()));
  z.next_in = const_cast<uint8_t*>(plain.data());
  z.avail_in = unsigned(plain.size());
  z.next_out = out.data();
  z.avail_out = unsigned(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace tb::fuzz
