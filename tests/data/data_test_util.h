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
#include <random>
#include <string>
#include <utility>
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

// The four gzip'd IDX files of a Fashion-MNIST-shaped set in `dir` (28x28, 10 classes): each
// class a pattern under noise, so a model learns it in a few epochs of a fraction of a second.
// Returns the test labels.
inline std::vector<uint8_t> write_fashion_like(const std::string& dir, int train, int test) {
  std::mt19937 rng(5);
  std::vector<uint8_t> pattern(10 * 784);
  for (uint8_t& v : pattern) v = uint8_t(rng() % 64);
  std::vector<uint8_t> test_labels;
  for (auto [prefix, count] : {std::pair{"train", train}, std::pair{"t10k", test}}) {
    auto header = [](std::vector<uint32_t> magic_and_dims) {  // big-endian
      std::vector<uint8_t> h;
      for (uint32_t v : magic_and_dims)
        for (int s = 24; s >= 0; s -= 8) h.push_back(uint8_t(v >> s));
      return h;
    };
    std::vector<uint8_t> images = header({0x803, uint32_t(count), 28, 28}),
                         labels = header({0x801, uint32_t(count)});
    for (int i = 0; i < count; ++i) {
      const int label = int(rng() % 10);
      labels.push_back(uint8_t(label));
      if (std::string(prefix) == "t10k") test_labels.push_back(uint8_t(label));
      for (int j = 0; j < 784; ++j)
        images.push_back(uint8_t(pattern[label * 784 + j] + rng() % 160));
    }
    write_gz(dir + "/" + prefix + "-images-idx3-ubyte.gz", images);
    write_gz(dir + "/" + prefix + "-labels-idx1-ubyte.gz", labels);
  }
  return test_labels;
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
