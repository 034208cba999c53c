// One plan step on the backend: the op each step names, with the buffers the plan gave it.
#include "core/error.h"
#include "train/executor.h"

namespace tb {

namespace {

constexpr BnParams kBn{1e-5f, 0.1f};  // WORKLOADS.md: eps 1e-5, momentum 0.1

// The plan's layout, and which of node `i`'s maps and gradients are bf16, are in every
// direction's dims.
ConvDims conv_dims(const Model& m, const Plan& plan, int i, int64_t batch) {
  const Node& n = m.nodes[size_t(i)];
  const Node& src = m.nodes[size_t(n.in0)];
  ConvDims d;
  d.n = batch, d.c = src.c, d.h = src.h, d.w = src.w;
  d.k = n.c, d.r = d.s = n.kernel, d.stride = n.stride, d.pad = n.pad;
  d.layout = plan.layout, d.dy_bf16 = plan.grad_bf16[size_t(i)];
  d.x_bf16 = plan.out_bf16[size_t(n.in0)], d.y_bf16 = plan.out_bf16[size_t(i)];
  return d;
}

PoolDims pool_dims(const Model& m, const Node& n, int64_t batch, Layout layout) {
  const Node& src = m.nodes[size_t(n.in0)];
  PoolDims d;
  d.n = batch, d.c = src.c, d.h = src.h, d.w = src.w;
  d.kernel = n.kernel, d.stride = n.stride, d.pad = n.pad;
  d.layout = layout;
  return d;
}

DenseDims dense_dims(const Model& m, const Node& n, int64_t batch) {
  return DenseDims{batch, m.nodes[size_t(n.in0)].out_size(), n.c};
}

// `writes`: the node whose buffer holds the step's output (the fused ReLU's, the add's, its own).
BnDims bn_dims(const Plan& plan, const Node& n, int writes, int64_t batch) {
  BnDims d{batch, n.c, int64_t(n.h) * n.w, plan.layout, bool(plan.grad_bf16[size_t(n.in0)])};
  d.x_bf16 = plan.out_bf16[size_t(n.in0)], d.y_bf16 = plan.out_bf16[size_t(writes)];
  return d;
}

}  // namespace

void Executor::issue_forward_step(const ForwardStep& s, int64_t n, bool training,
                                  std::vector<std::unique_ptr<OpCache>>& cache) {
  const Node& node = model_.nodes[size_t(s.node)];
  OpCache& c = *cache[size_t(s.node)];
  const float* x = buf_.out[size_t(s.x)];
  float* y = buf_.out[size_t(s.writes)];
  float* p = node.param_offset >= 0 ? buf_.params + node.param_offset : nullptr;
  void* ctx = be_.ctx;
  switch (s.op) {
    case ForwardOp::dense:
    case ForwardOp::dense_relu: {
      const DenseDims d = dense_dims(model_, node, n);
      const float* bias = node.bias ? p + d.in * d.out : nullptr;
      be_.dense_forward(ctx, c, d, x, p, bias, y, s.op == ForwardOp::dense_relu);
      break;
    }
    case ForwardOp::relu:
      be_.relu_forward(ctx, n * node.out_size(), x, y);
      break;
    case ForwardOp::add:
      be_.add(ctx, n * node.out_size(), x, buf_.out[size_t(s.skip)], y);
      break;
    case ForwardOp::bn_add_relu: {
      // The batch norm feeding the add, the add and the ReLU after it, in one pass.
      const Node& bn = model_.nodes[size_t(s.bn)];
      OpCache& bc = *cache[size_t(s.bn)];
      const BnDims d = bn_dims(plan_, bn, s.writes, n);
      const float* gamma = buf_.params + bn.param_offset;
      float* rs = buf_.state + bn.state_offset;
      const float* skip = buf_.out[size_t(s.skip)];
      float* saved = buf_.saved[size_t(s.bn)];
      if (training)
        be_.batchnorm_add_relu_forward_train(ctx, bc, d, kBn, x, skip, gamma, gamma + bn.c, y,
                                             saved, saved + bn.c, rs, rs + bn.c);
      else
        be_.batchnorm_add_relu_forward_eval(ctx, bc, d, kBn, x, skip, gamma, gamma + bn.c, rs,
                                            rs + bn.c, y);
      break;
    }
    case ForwardOp::conv2d:
      be_.conv2d_forward(ctx, c, conv_dims(model_, plan_, s.node, n), x, p, y);
      break;
    case ForwardOp::batchnorm:
    case ForwardOp::bn_relu: {
      const BnDims d = bn_dims(plan_, node, s.writes, n);
      float* rs = buf_.state + node.state_offset;
      float* saved = buf_.saved[size_t(s.node)];
      const bool relu = s.op == ForwardOp::bn_relu;
      if (training && relu)
        be_.batchnorm_relu_forward_train(ctx, c, d, kBn, x, p, p + node.c, y, saved, saved + node.c,
                                         rs, rs + node.c);
      else if (relu)
        be_.batchnorm_relu_forward_eval(ctx, c, d, kBn, x, p, p + node.c, rs, rs + node.c, y);
      else if (training)
        be_.batchnorm_forward_train(ctx, c, d, kBn, x, p, p + node.c, y, saved, saved + node.c, rs,
                                    rs + node.c);
      else
        be_.batchnorm_forward_eval(ctx, c, d, kBn, x, p, p + node.c, rs, rs + node.c, y);
      break;
    }
    case ForwardOp::maxpool:
      be_.maxpool_forward(ctx, c, pool_dims(model_, node, n, plan_.layout), x, y,
                          buf_.argmax[size_t(s.node)]);
      break;
    case ForwardOp::global_avgpool: {
      const Node& src = model_.nodes[size_t(node.in0)];
      be_.global_avgpool_forward(ctx, n, src.c, int64_t(src.h) * src.w, plan_.layout, x, y);
      break;
    }
  }
}

void Executor::issue_backward_step(const BackwardStep& s, int64_t n,
                                   std::vector<std::unique_ptr<OpCache>>& cache) {
  const Node& node = model_.nodes[size_t(s.node)];
  OpCache& c = *cache[size_t(s.node)];
  void* ctx = be_.ctx;
  const float* dy = buf_.grad[size_t(s.dy_node)];
  const float* x = buf_.out[size_t(node.in0)];
  float* p = node.param_offset >= 0 ? buf_.params + node.param_offset : nullptr;
  float* g = node.param_offset >= 0 ? buf_.grads + node.param_offset : nullptr;
  // Where an input's gradient goes (the plan decided: its buffer, or scratch to be added to it),
  // and the add that a later writer owes once its op has run.
  auto target = [&](int in, GradWrite w) -> float* {
    if (w == GradWrite::first) return buf_.grad[size_t(in)];
    return w == GradWrite::accumulate ? buf_.scratch : nullptr;
  };
  auto settle = [&](int in, GradWrite w) {
    if (w != GradWrite::accumulate) return;
    float* gi = buf_.grad[size_t(in)];
    be_.add(ctx, n * model_.nodes[size_t(in)].out_size(), gi, buf_.scratch, gi);
  };
  float* dx = target(node.in0, s.dx);
  switch (s.op) {
    case BackwardOp::dense: {
      const DenseDims d = dense_dims(model_, node, n);
      be_.dense_backward(ctx, c, d, x, p, dy, dx, g, node.bias ? g + d.in * d.out : nullptr);
      break;
    }
    case BackwardOp::relu:
      be_.relu_backward(ctx, n * node.out_size(), buf_.out[size_t(s.node)], dy, dx);
      break;
    case BackwardOp::add: {
      // dy goes on to both inputs; an input sharing the add's gradient buffer holds it already.
      const size_t bytes = size_t(n * node.out_size()) * sizeof(float);
      if (dx) be_.copy(ctx, dx, dy, bytes);
      settle(node.in0, s.dx);
      if (float* ds = target(node.in1, s.dskip)) be_.copy(ctx, ds, dy, bytes);
      settle(node.in1, s.dskip);
      return;
    }
    case BackwardOp::conv2d: {
      const ConvDims d = conv_dims(model_, plan_, s.node, n);
      be_.conv2d_backward_weights(ctx, c, d, x, dy, g);
      if (dx) be_.conv2d_backward_data(ctx, c, d, dy, p, dx);
      break;
    }
    case BackwardOp::batchnorm: {
      const float* saved = buf_.saved[size_t(s.node)];
      be_.batchnorm_backward(ctx, c, bn_dims(plan_, node, s.node, n), x, dy, p, saved,
                             saved + node.c, dx, g, g + node.c);
      break;
    }
    case BackwardOp::bn_relu: {
      // From the ReLU's output z and its gradient: BN's own output and gradient never exist.
      const float* saved = buf_.saved[size_t(s.node)];
      be_.batchnorm_relu_backward(ctx, c, bn_dims(plan_, node, s.dy_node, n), x,
                                  buf_.out[size_t(s.dy_node)], dy, p, saved, saved + node.c, dx, g,
                                  g + node.c);
      break;
    }
    case BackwardOp::maxpool:
      be_.maxpool_backward(ctx, c, pool_dims(model_, node, n, plan_.layout), dy,
                           buf_.argmax[size_t(s.node)], dx);
      break;
    case BackwardOp::global_avgpool: {
      const Node& src = model_.nodes[size_t(node.in0)];
      be_.global_avgpool_backward(ctx, n, src.c, int64_t(src.h) * src.w, plan_.layout, dy, dx);
      break;
    }
  }
  settle(node.in0, s.dx);
}

}  // namespace tb
