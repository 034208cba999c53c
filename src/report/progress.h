// Keras-like progress while training: a bar redrawn in place on a terminal, one plain line per
// epoch when output goes to a file or pipe (so logs stay readable).
#pragma once
#include <cstdio>

#include "train/runner.h"

namespace tb {

struct ProgressPrinter {
  std::FILE* out = stdout;
  bool tty = false;
  explicit ProgressPrinter(std::FILE* f);
  void operator()(const Progress& p);
};

}  // namespace tb
