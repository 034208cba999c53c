#include "models/torch_names.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace tb {

int64_t TorchTensor::count() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

static bool is_chain(const Model& m) {
  for (size_t i = 1; i < m.nodes.size(); ++i)
    if (m.nodes[i].in0 != int(i) - 1 || m.nodes[i].in1 >= 0) return false;
  return true;
}

// torchvision's name for the module that node i is.
static std::string module_name(const Model& m, size_t i, bool sequential) {
  if (sequential) return std::to_string(i);
  std::string name = m.nodes[i].name;
  for (auto [ours, theirs] : {std::pair{".downsample.conv", ".downsample.0"},
                              std::pair{".downsample.bn", ".downsample.1"}})
    if (name.ends_with(ours)) name.replace(name.size() - std::string(ours).size(), 100, theirs);
  return name;
}

std::vector<TorchTensor> torch_state_dict(const Model& m) {
  using Slot = TorchTensor::Slot;
  const bool sequential = is_chain(m);
  std::vector<TorchTensor> out;
  for (size_t i = 0; i < m.nodes.size(); ++i) {
    const Node& n = m.nodes[i];
    const std::string mod = module_name(m, i, sequential) + ".";
    const int64_t c = n.c;
    switch (n.kind) {
      case OpKind::dense: {
        const int64_t in = m.nodes[n.in0].out_size();
        out.push_back({mod + "weight", {c, in}, Slot::params, n.param_offset});
        if (n.bias) out.push_back({mod + "bias", {c}, Slot::params, n.param_offset + c * in});
        break;
      }
      case OpKind::conv2d:
        out.push_back({mod + "weight",
                       {c, m.nodes[n.in0].c, n.kernel, n.kernel},
                       Slot::params,
                       n.param_offset});
        break;
      case OpKind::batchnorm:
        out.push_back({mod + "weight", {c}, Slot::params, n.param_offset});
        out.push_back({mod + "bias", {c}, Slot::params, n.param_offset + c});
        out.push_back({mod + "running_mean", {c}, Slot::state, n.state_offset});
        out.push_back({mod + "running_var", {c}, Slot::state, n.state_offset + c});
        out.push_back({mod + "num_batches_tracked", {}, Slot::updates, 0});
        break;
      default:  // no tensors
        break;
    }
  }
  return out;
}

}  // namespace tb
