// The tar reader (plain or gzip'd), then what load_cifar10 makes of the archive: the binary
// layout's batches, or an image folder's classes and images. The first byte's bits choose what
// the target does to the rest before reading it: bit 0, rewrite the checksum of every block
// that carries the ustar magic (so that mutated headers get past it); bit 1, gzip it.
#include <omp.h>

#include <cstdio>
#include <cstring>

#include "data/cifar.h"
#include "data/tar.h"
#include "fuzz_util.h"

namespace {

void fix_checksums(std::vector<uint8_t>& tar) {
  for (size_t at = 0; at + 512 <= tar.size(); at += 512) {
    uint8_t* h = &tar[at];
    if (std::memcmp(h + 257, "ustar", 5) != 0) continue;
    std::memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < 512; i++) sum += h[i];
    char field[8];
    std::snprintf(field, sizeof(field), "%06o", sum & 0777777);
    std::memcpy(h + 148, field, 7);  // six digits and a NUL; the space after them stays
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  omp_set_num_threads(1);  // the machine's other core runs the next fuzzer
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::vector<uint8_t> bytes(data + 1, data + size);
  if (data[0] & 1) fix_checksums(bytes);
  if (data[0] & 2) bytes = tb::fuzz::gzip(bytes);
  const tb::fuzz::MemFile file(bytes.data(), bytes.size());
  bool archive = false;
  tb::fuzz::expect_ok_or_error([&] {
    for (const tb::TarMember& m : tb::read_tar(file.path()))
      tb::fuzz::check(!m.path.starts_with("./") && m.data, "member paths without ./, and bytes");
    archive = true;
  });
  if (!archive) return 0;
  tb::fuzz::expect_ok_or_error([&] {
    const tb::DatasetPair d = tb::load_cifar10(file.path());
    for (const tb::Dataset* s : {&d.train, &d.test}) {
      tb::fuzz::check(s->images.size() == uint64_t(s->count) * s->image_size() &&
                          s->labels.size() == uint64_t(s->count),
                      "a data set read whole");
      for (uint8_t l : s->labels) tb::fuzz::check(l < s->classes, "labels below classes");
    }
  });
  return 0;
}
