// Weights between trainbench and PyTorch itself: tests/train/torch_roundtrip.py exports weights
// trainbench trained and loads them in PyTorch (strict), and loads PyTorch-made weights in
// trainbench (evaluate, run --init), comparing logits, test loss and accuracy. Skips, saying why,
// where torch and torchvision do not import (Debian's python3-torch and python3-torchvision,
// which `./setup.sh test` installs).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "../test_util.h"

namespace {

// Debian's torch is for Debian's interpreter: a python3 earlier in PATH (pyenv) may lack it.
std::string python_with_torch() {
  for (const char* python : {"/usr/bin/python3", "python3"}) {
    const std::string probe =
        std::string(python) + " -c 'import torch, torchvision' >/dev/null 2>&1";
    if (std::system(probe.c_str()) == 0) return python;
  }
  return "";
}

TEST(TorchRoundTrip, SafetensorsGiveTheSameLogitsBothWays) {
  const std::string python = python_with_torch();
  if (python.empty())
    GTEST_SKIP() << "torch and torchvision do not import (apt-get install python3-torch "
                    "python3-torchvision)";
  tb::testing::TempDir dir;
  const std::string cmd = python + " " + TRAINBENCH_SOURCE_DIR +
                          "/tests/train/torch_roundtrip.py " + TRAINBENCH_BINARY + " " +
                          dir.path.string() + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  std::array<char, 4096> buf;
  size_t k;
  while ((k = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), k);
  const int status = pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  std::printf("%s", out.c_str());  // the figures, in the test's log
}

}  // namespace
