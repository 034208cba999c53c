#include "train/plan.h"

#include <fmt/format.h>

#include <algorithm>

#include "backends/backend.h"
#include "core/error.h"

namespace tb {

PlanCaps plan_caps(const Backend& be) {
  PlanCaps c;
  c.bn_relu = be.batchnorm_relu_forward_train && be.batchnorm_relu_forward_eval &&
              be.batchnorm_relu_backward;
  c.bn_add_relu = be.batchnorm_add_relu_forward_train && be.batchnorm_add_relu_forward_eval;
  c.mlp_step = be.mlp_step != nullptr;
  c.nhwc = be.nhwc;
  c.bf16_conv_grads = be.bf16_conv_grads;
  c.bf16_maps = be.bf16_maps;
  return c;
}

const char* op_name(ForwardOp op) {
  switch (op) {
    case ForwardOp::dense:
      return "dense";
    case ForwardOp::dense_relu:
      return "dense_relu";
    case ForwardOp::relu:
      return "relu";
    case ForwardOp::add:
      return "add";
    case ForwardOp::bn_add_relu:
      return "bn_add_relu";
    case ForwardOp::conv2d:
      return "conv2d";
    case ForwardOp::batchnorm:
      return "batchnorm";
    case ForwardOp::bn_relu:
      return "bn_relu";
    case ForwardOp::maxpool:
      return "maxpool";
    case ForwardOp::global_avgpool:
      return "global_avgpool";
  }
  return "?";
}

const char* op_name(BackwardOp op) {
  switch (op) {
    case BackwardOp::dense:
      return "dense";
    case BackwardOp::relu:
      return "relu";
    case BackwardOp::add:
      return "add";
    case BackwardOp::conv2d:
      return "conv2d";
    case BackwardOp::batchnorm:
      return "batchnorm";
    case BackwardOp::bn_relu:
      return "bn_relu";
    case BackwardOp::maxpool:
      return "maxpool";
    case BackwardOp::global_avgpool:
      return "global_avgpool";
  }
  return "?";
}

namespace {

// How node i computes the ReLU node right after it: not at all; in its forward only (dense: the
// ReLU node still runs the backward); or in both directions (batch norm: the ReLU node runs
// nothing, and neither the BN's output nor its gradient is ever materialised).
enum class ReluFusion : uint8_t { none, forward, both };

// The fusion and buffer-sharing decisions, per node: what compile_plan turns into steps.
struct Fusions {
  std::vector<int> consumers;
  std::vector<ReluFusion> relu;
  // A batch norm whose one consumer is a residual add, itself read only by the ReLU right after
  // it (ResNet's bn3 -> add -> relu3), runs at the add in one forward with both: per add the BN
  // it runs, per BN the add it runs at (-1 elsewhere).
  std::vector<int> bn_of_add, add_of_bn;
  // Per node: the add whose gradient buffer it shares, or -1.
  std::vector<int> grad_of_add;
};

bool relu_right_after(const Model& m, size_t i) {
  return i + 1 < m.nodes.size() && m.nodes[i + 1].kind == OpKind::relu &&
         m.nodes[i + 1].in0 == int(i);
}

Fusions find_fusions(const Model& m, const PlanCaps& caps) {
  const size_t nodes = m.nodes.size();
  Fusions f;
  f.consumers.assign(nodes, 0);
  for (const Node& n : m.nodes)
    for (int in : {n.in0, n.in1})
      if (in >= 0) f.consumers[size_t(in)]++;

  // A dense or BN node whose one consumer is the ReLU right after it computes that ReLU too.
  f.relu.assign(nodes, ReluFusion::none);
  for (size_t i = 0; i + 1 < nodes; ++i) {
    if (!relu_right_after(m, i) || f.consumers[i] != 1) continue;
    if (m.nodes[i].kind == OpKind::dense) f.relu[i] = ReluFusion::forward;
    if (m.nodes[i].kind == OpKind::batchnorm && caps.bn_relu) f.relu[i] = ReluFusion::both;
  }

  f.bn_of_add.assign(nodes, -1), f.add_of_bn.assign(nodes, -1);
  for (size_t j = 0; caps.bn_add_relu && j + 1 < nodes; ++j) {
    const Node& a = m.nodes[j];
    if (a.kind != OpKind::add || a.in0 == a.in1 || f.consumers[j] != 1 || !relu_right_after(m, j))
      continue;
    for (int in : {a.in0, a.in1}) {
      if (m.nodes[size_t(in)].kind != OpKind::batchnorm || f.consumers[size_t(in)] != 1 ||
          f.relu[size_t(in)] != ReluFusion::none)
        continue;
      f.bn_of_add[j] = in, f.add_of_bn[size_t(in)] = int(j);
      break;
    }
  }

  // A node whose one consumer is a residual add gets the add's gradient unchanged: it shares the
  // add's gradient buffer instead of receiving a copy (ResNet: every bn3 and projection BN).
  f.grad_of_add.assign(nodes, -1);
  std::vector<int> last_consumer(nodes, -1);
  for (size_t i = 0; i < nodes; ++i)
    for (int in : {m.nodes[i].in0, m.nodes[i].in1})
      if (in >= 0) last_consumer[size_t(in)] = int(i);
  auto is_add = [&](size_t i) {
    return m.nodes[i].kind == OpKind::add && m.nodes[i].in0 != m.nodes[i].in1;
  };
  for (size_t i = 0; i < nodes; ++i) {
    if (!is_add(i)) continue;
    for (int in : {m.nodes[i].in0, m.nodes[i].in1})
      if (in > 0 && f.consumers[size_t(in)] == 1) f.grad_of_add[size_t(in)] = int(i);
  }
  // So does a node read by the add and by others before it, where the add's gradient has been
  // read by everything that reads it before those others add theirs (ResNet's identity
  // shortcut: the block input's gradient starts as the add's, which the block's bn3 reads; the
  // block's conv1, earlier in the list and so later in the backward, then adds its part).
  for (size_t i = 0; i < nodes; ++i) {
    if (!is_add(i)) continue;
    const Node& n = m.nodes[i];
    int first_reader = int(i);  // the lowest node that reads grad[i]: the add or a sharer
    for (int in : {n.in0, n.in1})
      if (f.grad_of_add[size_t(in)] == int(i)) first_reader = std::min(first_reader, in);
    for (int in : {n.in0, n.in1}) {
      if (in <= 0 || f.consumers[size_t(in)] == 1 || last_consumer[size_t(in)] != int(i)) continue;
      bool others_earlier = true;  // every other consumer's backward runs after the readers'
      for (size_t k = size_t(in) + 1; k < i; ++k)
        if ((m.nodes[k].in0 == in || m.nodes[k].in1 == in) && int(k) >= first_reader)
          others_earlier = false;
      if (others_earlier) f.grad_of_add[size_t(in)] = int(i);
    }
  }
  return f;
}

std::vector<ForwardStep> forward_steps(const Model& m, const Fusions& f) {
  std::vector<ForwardStep> steps;
  for (size_t k = 1; k < m.nodes.size(); ++k) {
    const int i = int(k);
    const Node& n = m.nodes[k];
    ForwardStep s{ForwardOp::relu, i, n.in0, -1, -1, i, {i}};
    switch (n.kind) {
      case OpKind::input:
        continue;
      case OpKind::dense:
        s.op = ForwardOp::dense;
        if (f.relu[k] != ReluFusion::none) s.op = ForwardOp::dense_relu;
        break;
      case OpKind::relu:
        s.op = ForwardOp::relu;
        break;
      case OpKind::add:
        s.op = ForwardOp::add, s.skip = n.in1;
        if (const int b = f.bn_of_add[k]; b >= 0) {
          s.op = ForwardOp::bn_add_relu, s.bn = b;
          s.x = m.nodes[size_t(b)].in0, s.skip = n.in0 == b ? n.in1 : n.in0;
          s.covers = {i, b};
        }
        break;
      case OpKind::conv2d:
        s.op = ForwardOp::conv2d;
        break;
      case OpKind::batchnorm:
        if (f.add_of_bn[k] >= 0) continue;  // runs at its add
        s.op = f.relu[k] == ReluFusion::both ? ForwardOp::bn_relu : ForwardOp::batchnorm;
        break;
      case OpKind::maxpool:
        s.op = ForwardOp::maxpool;
        break;
      case OpKind::global_avgpool:
        s.op = ForwardOp::global_avgpool;
        break;
    }
    if (s.op == ForwardOp::dense_relu || s.op == ForwardOp::bn_relu ||
        s.op == ForwardOp::bn_add_relu) {
      s.writes = i + 1;  // the ReLU node's output
      s.covers.push_back(i + 1);
      ++k;
    }
    steps.push_back(std::move(s));
  }
  return steps;
}

// The backward steps in order, with where each writes its inputs' gradients: a node read by two
// consumers gets its gradient from both, the first (the later consumer: nodes run in reverse)
// writing it and the second writing scratch and adding.
std::vector<BackwardStep> backward_steps(const Model& m, const Fusions& f) {
  std::vector<BackwardStep> steps;
  std::vector<uint8_t> written(m.nodes.size(), 0);
  auto write_to = [&](int node) {
    if (node == 0) return GradWrite::none;  // the input needs no gradient
    const GradWrite w = written[size_t(node)] ? GradWrite::accumulate : GradWrite::first;
    written[size_t(node)] = 1;
    return w;
  };
  for (int i = int(m.nodes.size()) - 1; i >= 1; --i) {
    const Node& n = m.nodes[size_t(i)];
    // A node without parameters that reads only the data needs no backward at all.
    if (n.param_offset < 0 && n.in0 == 0 && n.in1 < 0) continue;
    BackwardStep s{BackwardOp::relu, i, i};
    switch (n.kind) {
      case OpKind::input:
        continue;
      case OpKind::dense:
        s.op = BackwardOp::dense;
        break;
      case OpKind::relu:
        if (f.relu[size_t(n.in0)] == ReluFusion::both) continue;  // its BN's backward runs it
        s.op = BackwardOp::relu;
        break;
      case OpKind::add: {
        s.op = BackwardOp::add;
        auto hand_on = [&](int in) {
          if (f.grad_of_add[size_t(in)] != i) return write_to(in);
          TB_CHECK(!written[size_t(in)], "plan: node {} shares a gradient written before", in);
          written[size_t(in)] = 1;
          return GradWrite::shared;
        };
        s.dx = hand_on(n.in0), s.dskip = hand_on(n.in1);
        steps.push_back(s);
        continue;
      }
      case OpKind::conv2d:
        s.op = BackwardOp::conv2d;
        break;
      case OpKind::batchnorm:
        s.op = BackwardOp::batchnorm;
        if (f.relu[size_t(i)] == ReluFusion::both) s.op = BackwardOp::bn_relu, s.dy_node = i + 1;
        break;
      case OpKind::maxpool:
        s.op = BackwardOp::maxpool;
        break;
      case OpKind::global_avgpool:
        s.op = BackwardOp::global_avgpool;
        break;
    }
    s.dx = write_to(n.in0);
    steps.push_back(s);
  }
  return steps;
}

}  // namespace

Plan compile_plan(const Model& m, const PlanCaps& caps, bool trains, bool mlp_allowed) {
  const size_t nodes = m.nodes.size();
  TB_CHECK(nodes >= 2 && m.nodes[0].kind == OpKind::input, "plan: model {} has no input node",
           m.name);
  const Fusions f = find_fusions(m, caps);
  Plan p;
  p.forward = forward_steps(m, f);
  if (trains) p.backward = backward_steps(m, f);

  p.has_out.assign(nodes, 1), p.grad_buffer.assign(nodes, -1);
  for (size_t i = 0; i < nodes; ++i)
    if (f.relu[i] != ReluFusion::none || f.bn_of_add[i] >= 0 || f.add_of_bn[i] >= 0)
      p.has_out[i] = 0;  // it writes the ReLU's output, never its own
  if (trains) {
    auto own = [&](size_t i) {  // a BN fused both ways reads the ReLU's gradient, never its own
      return i == 0 || f.grad_of_add[i] >= 0 || f.relu[i] == ReluFusion::both ? -1 : int(i);
    };
    for (size_t i = 0; i < nodes; ++i)
      p.grad_buffer[i] = f.grad_of_add[i] >= 0 ? own(size_t(f.grad_of_add[i])) : own(i);
  }

  bool flattens_a_map = false;
  for (const Node& n : m.nodes) {
    const Node* src = n.kind == OpKind::dense ? &m.nodes[size_t(n.in0)] : nullptr;
    flattens_a_map |= src && src->c > 1 && src->h * src->w > 1;
  }
  p.layout = caps.nhwc && !flattens_a_map ? Layout::nhwc : Layout::nchw;

  // A convolution's gradient in bf16: the batch norm that is its output's one consumer writes it
  // (first and alone), and the convolution alone reads it.
  p.grad_bf16.assign(nodes, 0);
  if (trains && caps.bf16_conv_grads && p.layout == Layout::nhwc) {
    std::vector<int> consumers(nodes, 0);
    for (const Node& n : m.nodes)
      for (int in : {n.in0, n.in1})
        if (in >= 0) consumers[size_t(in)]++;
    for (const BackwardStep& s : p.backward) {
      if (s.op != BackwardOp::batchnorm && s.op != BackwardOp::bn_relu) continue;
      const int c = m.nodes[size_t(s.node)].in0;
      if (m.nodes[size_t(c)].kind == OpKind::conv2d && consumers[size_t(c)] == 1 &&
          s.dx == GradWrite::first && p.grad_buffer[size_t(c)] == c)
        p.grad_bf16[size_t(c)] = 1;
    }
  }

  p.forward_of.assign(nodes, -1), p.backward_of.assign(nodes, -1);
  for (size_t s = 0; s < p.forward.size(); ++s)
    for (int n : p.forward[s].covers) p.forward_of[size_t(n)] = int(s);
  for (size_t s = 0; s < p.backward.size(); ++s) {
    p.backward_of[size_t(p.backward[s].node)] = int(s);
    if (p.backward[s].op == BackwardOp::bn_relu)
      p.backward_of[size_t(p.backward[s].dy_node)] = int(s);
  }

  // Maps in bf16: a convolution's output that batch norms alone read (forward and backward), and
  // a batch norm step's output (its fused ReLU's) that convolutions alone read and whose backward
  // is the batch norm's (bn_relu reads the ReLU's output as bf16; a relu step would not).
  p.out_bf16.assign(nodes, 0);
  if (caps.bf16_maps && p.layout == Layout::nhwc) {
    std::vector<uint8_t> read_by_bn(nodes, 1), read_by_conv(nodes, 1), read(nodes, 0);
    for (const Node& n : m.nodes)
      for (int in : {n.in0, n.in1}) {
        if (in < 0) continue;
        read[size_t(in)] = 1;
        read_by_bn[size_t(in)] &= n.kind == OpKind::batchnorm && n.in0 == in;
        read_by_conv[size_t(in)] &= n.kind == OpKind::conv2d;
      }
    for (size_t i = 0; i < nodes; ++i)
      if (m.nodes[i].kind == OpKind::conv2d && read[i] && read_by_bn[i]) p.out_bf16[i] = 1;
    for (const ForwardStep& s : p.forward) {
      if (s.op != ForwardOp::batchnorm && s.op != ForwardOp::bn_relu) continue;
      const size_t w = size_t(s.writes);
      const int b = p.backward_of[w];  // a ReLU's own backward step reads its output again
      const bool reread = b >= 0 && p.backward[size_t(b)].op == BackwardOp::relu;
      if (read[w] && read_by_conv[w] && !reread) p.out_bf16[w] = 1;
    }
  }

  // input -> dense (+ReLU) -> dense, parameters [W1 | b1 | W2 | b2]: Backend::mlp_step's shape.
  const std::vector<Node>& N = m.nodes;
  p.mlp.fits = caps.mlp_step && mlp_allowed && trains && nodes == 4 && N[1].kind == OpKind::dense &&
               N[1].in0 == 0 && N[1].bias && N[2].kind == OpKind::relu && N[2].in0 == 1 &&
               N[3].kind == OpKind::dense && N[3].in0 == 2 && N[3].bias &&
               f.relu[1] == ReluFusion::forward && N[1].param_offset == 0 &&
               N[3].param_offset == N[1].param_count && N[3].param_count == (N[1].c + 1) * N[3].c &&
               m.param_count == N[1].param_count + N[3].param_count && m.classes == N[3].c;
  if (p.mlp.fits) p.mlp.in = N[0].out_size(), p.mlp.hidden = N[1].c, p.mlp.classes = N[3].c;
  return p;
}

NodeCost Plan::cost(const Model& m, const ForwardStep& s, int64_t n) const {
  NodeCost c;
  for (int node : s.covers) {
    const NodeCost k = node_cost(m, size_t(node), n);
    c.flops_forward += k.flops_forward;
    if (node == s.node) c.bytes_forward += k.bytes_forward;  // fused-away nodes move nothing
  }
  return c;
}

NodeCost Plan::cost(const Model& m, const BackwardStep& s, int64_t n) const {
  NodeCost c = node_cost(m, size_t(s.node), n);
  c.flops_forward = c.bytes_forward = 0;
  if (s.op == BackwardOp::bn_relu)
    c.bytes_backward += node_cost(m, size_t(s.dy_node), n).bytes_backward;
  return c;
}

double Plan::train_flops_per_image(const Model& m) const {
  double total = 0;
  for (const ForwardStep& s : forward) total += cost(m, s, 1).flops();
  for (const BackwardStep& s : backward) total += cost(m, s, 1).flops();
  return total;
}

std::string describe_plan(const Model& m, const Plan& p) {
  std::string out = fmt::format("activations {}\n", layout_name(p.layout));
  for (const ForwardStep& s : p.forward) {
    std::string names;
    for (int n : s.covers) names += (names.empty() ? "" : "+") + m.nodes[size_t(n)].name;
    out += fmt::format("forward  {:<14} {}\n", op_name(s.op), names);
  }
  for (const BackwardStep& s : p.backward)
    out += fmt::format("backward {:<14} {}\n", op_name(s.op), m.nodes[size_t(s.node)].name);
  if (p.mlp.fits) out += "whole step: the backend's fused MLP step where it takes it\n";
  return out;
}

}  // namespace tb
