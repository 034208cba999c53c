// Errors: every bad input becomes a trainbench::Error with a one-line message that names the
// file, option or op and says what is wrong. The CLI prints it and exits non-zero.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace tb {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
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
