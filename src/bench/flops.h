// Model FLOPs and MFU. Model-agnostic: a model lists its weight layers with their forward FLOPs
// (2 x multiply-adds) and this applies WORKLOADS.md's training rule:
//   forward + backward, backward = 2 x forward (input gradient + weight gradient) for conv and
//   dense, except the first weight layer, which needs no input gradient (1 x forward).
// So a training step costs 3 x forward per layer, 2 x forward for the first.
// Bias, BN, ReLU, pooling and the loss are not counted (a few % of a conv net; the usual
// convention, as in the published 83.4 M multiply-adds of ResNet-50 at 32x32).
#pragma once
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tb {

// Forward FLOPs per sample of the two weight layers.
constexpr double dense_flops(int64_t in_features, int64_t out_features) {
  return 2.0 * static_cast<double>(in_features) * static_cast<double>(out_features);
}
constexpr double conv2d_flops(int64_t in_channels, int64_t out_channels, int64_t kh, int64_t kw,
                              int64_t out_h, int64_t out_w, int64_t groups = 1) {
  return 2.0 * static_cast<double>(out_channels) * static_cast<double>(out_h * out_w) *
         static_cast<double>(in_channels / groups) * static_cast<double>(kh * kw);
}

// MFU = achieved / peak, as a fraction (0.42 = 42%). NaN when the peak is unknown or not
// positive: the record then says "unknown" rather than inventing a number.
inline double mfu(double achieved_flops_per_s, std::optional<double> peak_flops_per_s) {
  if (!peak_flops_per_s || !(*peak_flops_per_s > 0)) return std::nan("");
  return achieved_flops_per_s / *peak_flops_per_s;
}

struct WeightLayer {
  std::string name;
  double forward = 0;  // FLOPs per sample
  bool first = false;  // the first weight layer: no input gradient
};

struct LayerFlops {
  std::string name;
  double forward = 0;
  double backward = 0;
};

struct TrainingFlops {
  std::vector<LayerFlops> layers;
  double forward = 0;                                  // per sample, whole model
  double backward = 0;                                 // per sample
  double train() const { return forward + backward; }  // one training step, per sample
};

inline TrainingFlops training_flops(const std::vector<WeightLayer>& layers) {
  TrainingFlops t;
  for (const WeightLayer& l : layers) {
    const double backward = (l.first ? 1.0 : 2.0) * l.forward;
    t.layers.push_back({l.name, l.forward, backward});
    t.forward += l.forward;
    t.backward += backward;
  }
  return t;
}

}  // namespace tb
