// `trainbench data SOURCE OUT_DIR`: CIFAR-10 in any layout we read -> the official binary layout.
#include <fmt/format.h>

#include "cli/commands.h"
#include "data/cifar.h"

namespace tb {

int data_command(const std::string& from, const std::string& to) {
  const DatasetPair d = load_cifar10(from);
  write_cifar_binary(d, to);
  fmt::print(
      "wrote {} train and {} test images from {} to {} (data_batch_1..5.bin, test_batch.bin)\n",
      d.train.count, d.test.count, from, to);
  return 0;
}

}  // namespace tb
