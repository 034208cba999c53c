// Helpers for the data-layer tests: a self-removing temp dir, raw/gzip file writers and a check
// that a call throws a one-line tb::Error containing given text.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "../test_util.h"
#include "core/error.h"

namespace tb::testing {

inline void write_raw(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

inline void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

// The message of the tb::Error that f throws; a test failure if it throws nothing or else.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tb::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected tb::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected tb::Error, nothing was thrown";
  return "";
}

}  // namespace tb::testing

// Checks that stmt throws a one-line tb::Error whose message contains every given string.
#define EXPECT_TB_ERROR(stmt, ...)                                                      \
  do {                                                                                  \
    std::string tb_msg_ = ::tb::testing::error_of([&] { stmt; });                       \
    for (const std::string& tb_want_ : std::initializer_list<std::string>{__VA_ARGS__}) \
      EXPECT_NE(tb_msg_.find(tb_want_), std::string::npos)                              \
          << "message lacks \"" << tb_want_ << "\": " << tb_msg_;                       \
    EXPECT_EQ(tb_msg_.find('\n'), std::string::npos) << "not one line: " << tb_msg_;    \
  } while (0)
