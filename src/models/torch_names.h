// A model's tensors under the names, in the order and with the shapes that PyTorch's
// state_dict() gives the same network, and where each lives in trainbench's arrays. The layouts
// are PyTorch's already (dense weight [out, in], conv weight [k, c, r, s], batch norm gamma then
// beta, running mean then variance), so every tensor is one contiguous span.
//
// Names come from the model's structure: a model that is one chain of nodes (the MLP) is an
// nn.Sequential whose module i is node i (node 0, the input, is its nn.Flatten): "1.weight";
// any other (ResNet) is named by its node names, which are torchvision's attribute paths except
// the projection shortcut, torchvision's nn.Sequential(conv, bn): "layer1.0.downsample.0.weight".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/model.h"

namespace tb {

struct TorchTensor {
  // Where the values live: the parameter array, the batch-norm statistics array, or nowhere:
  // a batch norm's num_batches_tracked (int64, shape []), the optimizer's update count.
  enum class Slot : uint8_t { params, state, updates };
  std::string name;
  std::vector<int64_t> shape;
  Slot slot = Slot::params;
  int64_t offset = 0;  // into the params or state array

  int64_t count() const;  // values (1 for a scalar)
};

std::vector<TorchTensor> torch_state_dict(const Model& m);

// "[64, 3, 7, 7]"
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace tb
