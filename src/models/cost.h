// The one cost model: what a node costs for a batch, forward and backward, in FLOPs and bytes.
// The model's totals, the plan's steps, the profile's rows, MFU and the op tests read it.
//
// FLOPs follow WORKLOADS.md: 2 x multiply-adds for dense and conv; backward = 2 x forward (input
// gradient + weight gradient), 1 x for the layer that reads the input (no input gradient); bias,
// batch norm, ReLU, pooling, adds and the loss count 0 (a few % of a conv net; the usual
// convention, as in the published 83.4 M multiply-adds of ResNet-50 at 32x32).
// Bytes estimate the fp32 traffic: inputs, outputs and weights read or written.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>

#include "models/model.h"

namespace tb {

struct NodeCost {
  double flops_forward = 0, flops_backward = 0;
  double bytes_forward = 0, bytes_backward = 0;
  double flops() const { return flops_forward + flops_backward; }
  double bytes() const { return bytes_forward + bytes_backward; }
};

// Node i's cost for a batch of n images.
NodeCost node_cost(const Model& m, size_t i, int64_t n);

// Per image, over the whole model.
double forward_flops_per_image(const Model& m);
double train_flops_per_image(const Model& m);

// Model FLOP utilisation: achieved over peak, as a fraction; nullopt where the peak is unknown.
std::optional<double> mfu(double achieved_flops_per_s, std::optional<double> peak_flops_per_s);

}  // namespace tb
