// Errors: every bad input becomes a trainbench::Error with a one-line message that names the
// file, option or op and says what is wrong. The CLI prints it and exits non-zero.
#pragma once
#include <fmt/format.h>

#include <cstddef>
#include <stdexcept>
#include <string>

namespace tb {

// Messages stay one line whatever they quote: a control character in a name read from a file
// (a newline in a tar member's name) is written as \n or \xNN.
inline std::string one_line(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    if (c == '\n')
      out += "\\n";
    else if ((unsigned char)c < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02x}", (unsigned char)c);
    else
      out += c;
  }
  return out;
}

struct Error : std::runtime_error {
  explicit Error(const std::string& what) : std::runtime_error(one_line(what)) {}
};

// A backend could not allocate: `requested` bytes, with `available` bytes free when it failed
// (0 when the backend cannot say). The executor restates it with the largest batch that fits.
struct OutOfMemory : Error {
  size_t requested = 0, available = 0;
  OutOfMemory(const std::string& what, size_t requested_bytes, size_t available_bytes)
      : Error(what), requested(requested_bytes), available(available_bytes) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

#define TB_CHECK(cond, ...)               \
  do {                                    \
    if (!(cond)) ::tb::fail(__VA_ARGS__); \
  } while (0)

}  // namespace tb
