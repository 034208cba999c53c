// ResNet's structure at toy size for tests: stem width 8, widths base, 2 base, 4 base, 8 base
// (base 4 unless asked; bottleneck expansion 4), one block per stage unless `first_stage_blocks`
// asks for more (a second block in stage 1 is an identity shortcut), 16x16 inputs of `channels`
// channels, 10 classes. Base 8 puts every channel count but the input's at a multiple of 8, where
// CUDA runs convolutions in bf16 (a bf16 run takes the others in tf32).
#pragma once
#include "models/model.h"

namespace tb::testing {

inline Model tiny_resnet(int channels = 3, int first_stage_blocks = 1, int base = 4) {
  ResNetSpec spec;
  spec.name = "resnet_tiny", spec.stem_width = 8;
  for (int i = 0; i < 4; ++i) spec.blocks[i] = 1, spec.widths[i] = base << i;
  spec.blocks[0] = first_stage_blocks;
  return build_resnet(spec, 10, channels, 16, 16);
}

}  // namespace tb::testing
