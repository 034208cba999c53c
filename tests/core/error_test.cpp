// core/error.h: a message stays one line whatever it quotes.
#include "core/error.h"

#include <gtest/gtest.h>

namespace tb {
namespace {

TEST(ErrorTest, ControlCharactersAreWrittenOut) {
  EXPECT_STREQ(Error("tar x: member a\nb\x1b[2J\t.png is bad").what(),
               "tar x: member a\\nb\\x1b[2J\\x09.png is bad");
  EXPECT_STREQ(Error("caf\xc3\xa9: plain UTF-8 stays").what(), "caf\xc3\xa9: plain UTF-8 stays");
  std::string msg;
  try {
    fail("{}: cut off", "x\ry");
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_EQ(msg, "x\\x0dy: cut off");
}

}  // namespace
}  // namespace tb
