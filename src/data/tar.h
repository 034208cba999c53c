// A small tar reader over zlib (no libarchive): ustar / GNU / pax archives, gzip'd or plain.
// Only regular files are kept, all in memory; nothing is extracted to disk.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tb {

struct TarMember {
  std::string path;  // as stored, with a leading "./" removed; long names (GNU 'L', pax) resolved
  // A hard link shares its target's bytes: links to one large member cost its size once.
  std::shared_ptr<const std::vector<uint8_t>> data;
};

// Every regular file of the archive, in archive order. Directories, links and special files are
// skipped; a bad checksum, a cut-off member or a missing end-of-archive block is a tb::Error.
std::vector<TarMember> read_tar(const std::string& path);

}  // namespace tb
