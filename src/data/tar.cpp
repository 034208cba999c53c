#include "data/tar.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/gzio.h"

namespace tb {
namespace {

constexpr size_t kBlock = 512;
constexpr uint64_t kMaxMemberBytes = uint64_t(1) << 36;  // members are held in memory

// Numeric header fields: octal text padded with NUL/space, or GNU base-256 when the top bit is set.
bool parse_number(const uint8_t* p, size_t n, uint64_t* out) {
  uint64_t v = 0;
  if (p[0] & 0x80) {
    if (p[0] != 0x80) return false;  // negative or huge: not a size we accept
    for (size_t i = 1; i < n; i++) {
      if (v >> 56) return false;
      v = v << 8 | p[i];
    }
    *out = v;
    return true;
  }
  size_t i = 0;
  while (i < n && p[i] == ' ') i++;
  bool any = false;
  for (; i < n && p[i] >= '0' && p[i] <= '7'; i++, any = true) {
    if (v >> 60) return false;
    v = v * 8 + (p[i] - '0');
  }
  for (; i < n; i++)
    if (p[i] != ' ' && p[i] != 0) return false;
  *out = v;
  return any;
}

// Up to the first NUL. Not strnlen: an empty GNU long name has no bytes, and p is null then.
std::string field(const uint8_t* p, size_t n) {
  return std::string(p, std::find(p, p + n, uint8_t(0)));
}

// The stored checksum counts the checksum field as 8 spaces; old tars summed signed chars.
bool checksum_ok(const uint8_t* h) {
  uint64_t stored;
  if (!parse_number(h + 148, 8, &stored)) return false;
  int64_t u = 0, s = 0;
  for (size_t i = 0; i < kBlock; i++) {
    uint8_t c = (i >= 148 && i < 156) ? ' ' : h[i];
    u += c;
    s += int8_t(c);
  }
  return int64_t(stored) == u || int64_t(stored) == s;
}

// What GNU 'L'/'K' and pax 'x' headers say about the member that follows them.
struct Override {
  std::string name, link;
  uint64_t size = 0;
  bool has_size = false;
};

// pax extended header records: "<len> <key>=<value>\n".
void parse_pax(const std::vector<uint8_t>& d, const std::string& path, Override* o) {
  size_t at = 0;
  while (at < d.size() && d[at] != 0) {
    size_t len = 0, i = at;
    while (i < d.size() && d[i] >= '0' && d[i] <= '9') len = len * 10 + (d[i++] - '0');
    if (i >= d.size() || d[i] != ' ' || len == 0 || at + len > d.size() || d[at + len - 1] != '\n')
      fail("{}: corrupt pax extended header record at offset {}", path, at);
    std::string rec(reinterpret_cast<const char*>(&d[i + 1]), at + len - 1 - (i + 1));
    size_t eq = rec.find('=');
    if (eq != std::string::npos) {
      std::string key = rec.substr(0, eq), value = rec.substr(eq + 1);
      if (key == "path") o->name = value;
      if (key == "linkpath") o->link = value;
      if (key == "size") {
        char* end = nullptr;
        o->size = std::strtoull(value.c_str(), &end, 10);
        if (value.empty() || *end) fail("{}: bad pax size '{}'", path, value);
        o->has_size = true;
      }
    }
    at += len;
  }
}

std::string clean_path(std::string p) {
  while (p.starts_with("./")) p.erase(0, 2);
  return p;
}

}  // namespace

std::vector<TarMember> read_tar(const std::string& path) {
  gzio::GzPtr f = gzio::open_read(path);
  std::vector<TarMember> out;
  Override next;  // applies to the next regular header only
  uint8_t h[kBlock];
  uint64_t offset = 0;  // of the current header in the uncompressed stream, for messages
  for (;;) {
    size_t n = gzio::read_some(f.get(), h, kBlock, path);
    if (n == 0) fail("{}: archive ends without the end-of-archive block (truncated?)", path);
    if (n < kBlock) fail("{}: archive cut off inside a header at offset {}", path, offset);
    bool zero = true;
    for (size_t i = 0; i < kBlock && zero; i++) zero = h[i] == 0;
    if (zero) break;  // end of archive; a second zero block may follow, nothing we need does
    if (!checksum_ok(h)) {
      if (offset == 0) fail("{}: not a tar archive (bad header checksum)", path);
      fail("{}: corrupt tar header at offset {} (bad checksum)", path, offset);
    }
    uint64_t size;
    if (!parse_number(h + 124, 12, &size)) fail("{}: bad size field at offset {}", path, offset);
    char type = char(h[156]);
    std::string name = field(h, 100), link = field(h + 157, 100);
    // ustar splits long paths into prefix/name; GNU tar ("ustar  ") uses those bytes otherwise.
    if (std::memcmp(h + 257, "ustar\0", 6) == 0 && h[345]) name = field(h + 345, 155) + "/" + name;
    bool meta = type == 'L' || type == 'K' || type == 'x' || type == 'g';
    if (!meta) {
      if (!next.name.empty()) name = next.name;
      if (!next.link.empty()) link = next.link;
      if (next.has_size) size = next.size;
    }
    if (size > kMaxMemberBytes)
      fail("{}: member {} claims {} bytes (corrupt header?)", path, name, size);
    if (const uint64_t most = gzio::most_left(f.get(), path); size > most)
      fail("{}: archive cut off inside member {} ({} bytes declared, at most {} left)", path, name,
           size, most);

    std::vector<uint8_t> data;
    gzio::read_grow(f.get(), data, size, path);
    if (data.size() < size)
      fail("{}: archive cut off inside member {} ({} bytes declared)", path, name, size);
    uint64_t pad = (kBlock - size % kBlock) % kBlock;
    if (gzio::read_some(f.get(), h, pad, path) < pad)
      fail("{}: archive cut off after member {}", path, name);
    offset += kBlock + size + pad;

    if (type == 'L' || type == 'K') {  // GNU long name / link name of the next member
      (type == 'L' ? next.name : next.link) = field(data.data(), data.size());
      continue;
    }
    if (type == 'x') {
      parse_pax(data, path, &next);
      continue;
    }
    next = Override();
    if (type == 'g') continue;  // global pax header: nothing we use
    name = clean_path(name);
    if (type == '1') {
      // GNU tar stores a second copy of a file as a hard link to the first: keep both.
      std::string target = clean_path(link);
      auto it = std::find_if(out.rbegin(), out.rend(),
                             [&](const TarMember& m) { return m.path == target; });
      if (it == out.rend())
        fail("{}: hard link {} points to {}, not an earlier file in the archive", path, name,
             target);
      out.push_back({name, it->data});
      continue;
    }
    // Regular files only: directories, symlinks, devices and fifos are skipped.
    if ((type == '0' || type == '\0' || type == '7') && !name.ends_with("/"))
      out.push_back({name, std::make_shared<const std::vector<uint8_t>>(std::move(data))});
  }
  return out;
}

}  // namespace tb
