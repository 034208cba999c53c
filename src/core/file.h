// Writing a file so that a crash or a full disk never leaves half of it: temp file, fsync,
// rename. Results, reports and data conversions all go through here.
#pragma once
#include <string>

namespace tb {
// Creates missing parent folders; throws Error naming path on any failure.
void write_text_atomic(const std::string& path, const std::string& text);
}  // namespace tb
