// The checkpoint reader (read_checkpoint: --resume and evaluate). The first byte chooses what
// the rest is: even, the file as it is; odd, the JSON header, a \0 byte, then the arrays' bytes,
// which the target frames (magic, header length, CRC-32) the way write_checkpoint does, so that
// mutations of the header reach past the length and checksum checks.
#include <zlib.h>

#include <cstring>
#include <sstream>

#include "fuzz_util.h"
#include "train/checkpoint.h"

namespace {

std::string framed(const char* p, size_t n) {
  const char* nul = static_cast<const char*>(std::memchr(p, 0, n));
  const size_t header_len = nul ? size_t(nul - p) : n;
  const std::string arrays = nul ? std::string(nul + 1, p + n) : std::string();
  std::string file("TBCKPT\0\1", 8);
  const uint64_t len = header_len;  // little-endian, as the format says
  file.append(reinterpret_cast<const char*>(&len), sizeof(len));
  file.append(p, header_len);
  file += arrays;
  const uint32_t crc =
      uint32_t(crc32(0, reinterpret_cast<const Bytef*>(file.data()), uInt(file.size())));
  file.append(reinterpret_cast<const char*>(&crc), sizeof(crc));
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const char* rest = reinterpret_cast<const char*>(data + 1);
  const std::string file = data[0] & 1 ? framed(rest, size - 1) : std::string(rest, size - 1);
  std::istringstream in(file);
  tb::fuzz::expect_ok_or_error([&] {
    const tb::Checkpoint c = tb::read_checkpoint(in, file.size(), "fuzz.tbck");
    const uint64_t P = uint64_t(c.param_count), S = uint64_t(c.state_count);
    tb::fuzz::check(c.params.size() == P && c.opt_m.size() == P && c.opt_v.size() == P &&
                        c.state.size() == S && int64_t(c.epochs.size()) == c.epochs_done,
                    "arrays of the header's sizes");
  });
  return 0;
}
