#include "models/cost.h"

namespace tb {

NodeCost node_cost(const Model& m, size_t i, int64_t n) {
  const Node& node = m.nodes[i];
  NodeCost c;
  if (node.in0 < 0) return c;
  const double fwd_flops = 2.0 * double(node_macs(m, node)) * double(n);
  c.flops_forward = fwd_flops;
  c.flops_backward = (node.in0 == 0 ? 1.0 : 2.0) * fwd_flops;

  const double x = double(n) * double(m.nodes[size_t(node.in0)].out_size());
  const double y = double(n) * double(node.out_size());
  const double w = double(node.param_count);
  const double dx = node.in0 == 0 ? 0 : x;  // the input gets no gradient
  double fwd = 0, bwd = 0;
  switch (node.kind) {
    case OpKind::input:
      break;
    case OpKind::dense:
    case OpKind::conv2d:
      fwd = x + w + y, bwd = y + x + w + dx + w;
      break;
    case OpKind::relu:
      fwd = x + y, bwd = y + y + dx;
      break;
    case OpKind::batchnorm:
      fwd = x + y + w, bwd = x + y + dx + w + w;
      break;
    case OpKind::maxpool:  // + the winners' indices (int32)
      fwd = x + 2 * y, bwd = 2 * y + dx;
      break;
    case OpKind::global_avgpool:
      fwd = x + y, bwd = y + dx;
      break;
    case OpKind::add:  // dy read twice, two copies written
      fwd = x + 2 * y, bwd = 4 * y;
      break;
  }
  c.bytes_forward = 4.0 * fwd, c.bytes_backward = 4.0 * bwd;
  return c;
}

double forward_flops_per_image(const Model& m) {
  double total = 0;
  for (size_t i = 0; i < m.nodes.size(); ++i) total += node_cost(m, i, 1).flops_forward;
  return total;
}

double train_flops_per_image(const Model& m) {
  double total = 0;
  for (size_t i = 0; i < m.nodes.size(); ++i) total += node_cost(m, i, 1).flops();
  return total;
}

std::optional<double> mfu(double achieved_flops_per_s, std::optional<double> peak_flops_per_s) {
  if (!peak_flops_per_s || !(*peak_flops_per_s > 0)) return std::nullopt;
  return achieved_flops_per_s / *peak_flops_per_s;
}

}  // namespace tb
