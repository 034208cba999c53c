// `trainbench data SOURCE OUT_DIR`: CIFAR-10 in any layout we read -> the official binary layout.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "data/cifar.h"

namespace tb {

CLI::App* add_data_command(CLI::App& app, DataCommandOptions& o) {
  auto* cmd = app.add_subcommand(
      "data",
      "Convert CIFAR-10 (image folders, or a .tar.gz of them) into the official binary layout");
  cmd->add_option("source", o.from, "image-folder root, .tar.gz, or binary folder")->required();
  cmd->add_option("out_dir", o.to, "where data_batch_1..5.bin and test_batch.bin go")->required();
  return cmd;
}

int data_command(const DataCommandOptions& o) {
  const DatasetPair d = load_cifar10(o.from);
  write_cifar_binary(d, o.to);
  fmt::print(
      "wrote {} train and {} test images from {} to {} (data_batch_1..5.bin, test_batch.bin)\n",
      d.train.count, d.test.count, o.from, o.to);
  return 0;
}

}  // namespace tb
