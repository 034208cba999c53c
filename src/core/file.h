// Writing a file so that a crash or a full disk never leaves half of it: temp file, fsync,
// rename. Results, reports and data conversions all go through here.
#pragma once
#include <cstddef>
#include <functional>
#include <string>

namespace tb {
// `fill` creates and writes the temp file whose path it is given, returning false on any write
// error (errno saying why, where it can). Then the temp file is synced and renamed to `path`.
// Creates missing parent folders; throws Error naming path on any failure, removing the temp.
void write_file_atomic(const std::string& path,
                       const std::function<bool(const std::string&)>& fill);
void write_text_atomic(const std::string& path, const std::string& text);
// Writes all `bytes` to fd, retrying short writes; false on an error (errno says which).
bool write_all(int fd, const void* data, size_t bytes);
}  // namespace tb
