// One ustar header block, for tests and the fuzz corpus that build tar archives by hand: name
// and link cut to 100 bytes, mode 0644, the size in octal (or base-256, GNU's form for sizes
// octal cannot hold), the checksum filled in.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace tb::testing {

inline std::vector<uint8_t> tar_header(const std::string& name, uint64_t size, char type,
                                       const std::string& link = "", bool base256 = false) {
  std::vector<uint8_t> h(512, 0);
  std::memcpy(&h[0], name.data(), std::min<size_t>(name.size(), 100));
  std::memcpy(&h[157], link.data(), std::min<size_t>(link.size(), 100));
  auto octal = [&](size_t at, size_t n, uint64_t v) {
    std::snprintf(reinterpret_cast<char*>(&h[at]), n, "%0*llo", int(n - 1), (unsigned long long)v);
  };
  octal(100, 8, 0644), octal(108, 8, 0), octal(116, 8, 0);
  octal(124, 12, size), octal(136, 12, 1700000000);
  if (base256) {
    std::memset(&h[124], 0, 12);
    h[124] = 0x80;
    for (int i = 0; i < 8; i++) h[135 - i] = uint8_t(size >> (8 * i));
  }
  h[156] = uint8_t(type);
  std::memcpy(&h[257],
              "ustar\0"
              "00",
              8);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (uint8_t c : h) sum += c;
  std::snprintf(reinterpret_cast<char*>(&h[148]), 8, "%06o", sum);
  h[155] = ' ';
  return h;
}

}  // namespace tb::testing
