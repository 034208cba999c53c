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
// Removes the temp files of write_file_atomic(path) that a writer killed mid-write (kill -9, a
// power cut) left beside `path`: those whose process is gone. Each may be as large as the file.
void remove_stale_temps(const std::string& path);
// Writes all `bytes` to fd, retrying short writes; false on an error (errno says which).
bool write_all(int fd, const void* data, size_t bytes);
}  // namespace tb
