// gzip decompression as the IDX and tar readers do it (core/gzio.h over zlib's gz* functions):
// plain bytes pass through unchanged, chunked and whole reads agree, and no file yields more
// than gzio::most_left promised before the first read.
#include <vector>

#include "core/gzio.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const tb::fuzz::MemFile file(data, size);
  const std::string path = file.path();
  tb::fuzz::expect_ok_or_error([&] {
    tb::gzio::GzPtr f = tb::gzio::open_read(path);
    const uint64_t most = tb::gzio::most_left(f.get(), path);
    std::vector<uint8_t> chunked;
    uint8_t buf[777];
    while (size_t got = tb::gzio::read_some(f.get(), buf, sizeof(buf), path))
      chunked.insert(chunked.end(), buf, buf + got);
    tb::fuzz::check(chunked.size() <= most, "no more bytes than most_left");
    if (gzdirect(f.get()))
      tb::fuzz::check(chunked == std::vector<uint8_t>(data, data + size), "plain bytes unchanged");
    tb::gzio::GzPtr again = tb::gzio::open_read(path);
    std::vector<uint8_t> whole;
    tb::gzio::read_grow(again.get(), whole, chunked.size() + 1, path);
    tb::fuzz::check(whole == chunked, "whole and chunked reads agree");
  });
  return 0;
}
