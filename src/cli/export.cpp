// `trainbench export CHECKPOINT --out FILE.safetensors`: a checkpoint's model as PyTorch holds
// it, so that torchvision's resnet50(num_classes=10) (or the MLP's nn.Sequential) loads it with
// load_state_dict(strict=True) and gives the same logits (train/torch_weights.h).
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "train/checkpoint.h"
#include "train/torch_weights.h"

namespace tb {

CLI::App* add_export_command(CLI::App& app, ExportCommandOptions& o) {
  auto* cmd = app.add_subcommand(
      "export", "Write a checkpoint's weights as safetensors, under PyTorch's state_dict names");
  cmd->add_option("checkpoint", o.checkpoint, "a checkpoint written by run --checkpoint")
      ->required();
  cmd->add_option("--out", o.out, "the .safetensors file to write")->required();
  return cmd;
}

int export_command(const ExportCommandOptions& o) {
  Checkpoint c = read_checkpoint(o.checkpoint);
  const Model model = checkpoint_model(c, o.checkpoint);
  export_safetensors(c, model, o.out);
  fmt::print("{}: {} {} ({} parameters, {} updates) -> {}\n", o.checkpoint, c.workload,
             checkpoint_place(c), model.param_count, c.updates, o.out);
  return 0;
}

}  // namespace tb
