// core/file.h: a write either lands whole or not at all, and a failure names the file.
#include "core/file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "../test_util.h"
#include "core/error.h"

namespace tb {
namespace {
namespace fs = std::filesystem;

using testing::TempDir;

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(FileTest, TextLandsWholeAndMakesFolders) {
  TempDir dir;
  const fs::path target = dir.path / "a/b/result.json";
  write_text_atomic(target.string(), "{\"x\": 1}\n");
  EXPECT_EQ(slurp(target), "{\"x\": 1}\n");
  write_text_atomic(target.string(), "second");
  EXPECT_EQ(slurp(target), "second");
  EXPECT_EQ(std::distance(fs::directory_iterator(target.parent_path()), {}), 1);  // no temp left
}

TEST(FileTest, FailedWriteKeepsTheOldFileAndLeavesNoTemp) {
  TempDir dir;
  const fs::path target = dir.path / "data.bin";
  write_text_atomic(target.string(), "old");
  try {
    write_file_atomic(target.string(), [](const std::string& tmp) {
      std::ofstream(tmp) << "half";
      errno = ENOSPC;
      return false;
    });
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(target.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("write failed"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::strerror(ENOSPC)), std::string::npos) << msg;
  }
  EXPECT_EQ(slurp(target), "old");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path), {}), 1);
}

TEST(FileTest, UnwritablePlaceIsAnError) {
  TempDir dir;
  write_text_atomic((dir.path / "plain").string(), "x");
  // A path below a regular file cannot be created.
  EXPECT_THROW(write_text_atomic((dir.path / "plain/inside.json").string(), "y"), Error);
}

}  // namespace
}  // namespace tb
