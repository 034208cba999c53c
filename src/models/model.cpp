#include "models/model.h"

#include <fmt/format.h>

#include "core/error.h"

namespace tb {

const char* op_name(OpKind k) {
  switch (k) {
    case OpKind::input:
      return "input";
    case OpKind::dense:
      return "dense";
    case OpKind::relu:
      return "relu";
    case OpKind::conv2d:
      return "conv2d";
    case OpKind::batchnorm:
      return "batchnorm";
    case OpKind::maxpool:
      return "maxpool";
    case OpKind::global_avgpool:
      return "global_avgpool";
    case OpKind::add:
      return "add";
  }
  return "?";
}

static int push(Model& m, Node n) {
  if (n.param_count > 0) {
    n.param_offset = m.param_count;
    m.param_count += n.param_count;
  }
  if (n.state_count > 0) {
    n.state_offset = m.state_count;
    m.state_count += n.state_count;
  }
  m.nodes.push_back(std::move(n));
  return int(m.nodes.size()) - 1;
}

int add_input(Model& m, int c, int h, int w) {
  Node n;
  n.kind = OpKind::input, n.name = "input", n.c = c, n.h = h, n.w = w;
  return push(m, n);
}

int add_dense(Model& m, int in, int features, bool bias, Init init, const std::string& name) {
  const Node& src = m.nodes.at(in);
  Node n;
  n.kind = OpKind::dense, n.name = name, n.in0 = in, n.c = features, n.bias = bias, n.init = init;
  n.param_count = int64_t(features) * src.out_size() + (bias ? features : 0);
  return push(m, n);
}

int add_relu(Model& m, int in, const std::string& name) {
  Node n = m.nodes.at(in);
  n.kind = OpKind::relu, n.name = name, n.in0 = in, n.in1 = -1, n.init = Init::none;
  n.param_offset = n.state_offset = -1, n.param_count = n.state_count = 0;
  return push(m, n);
}

int add_conv(Model& m, int in, int out_channels, int kernel, int stride, int pad,
             const std::string& name) {
  const Node& src = m.nodes.at(in);
  Node n;
  n.kind = OpKind::conv2d, n.name = name, n.in0 = in, n.c = out_channels;
  n.kernel = kernel, n.stride = stride, n.pad = pad, n.init = Init::kaiming_normal_fan_out;
  n.h = (src.h + 2 * pad - kernel) / stride + 1;
  n.w = (src.w + 2 * pad - kernel) / stride + 1;
  TB_CHECK(n.h > 0 && n.w > 0, "{}: input {}x{} too small for a {}x{} kernel", name, src.h, src.w,
           kernel, kernel);
  n.param_count = int64_t(out_channels) * src.c * kernel * kernel;
  return push(m, n);
}

int add_batchnorm(Model& m, int in, const std::string& name) {
  Node n = m.nodes.at(in);
  n.kind = OpKind::batchnorm, n.name = name, n.in0 = in, n.in1 = -1, n.init = Init::batchnorm;
  n.param_offset = n.state_offset = -1;
  n.param_count = 2 * int64_t(n.c);
  n.state_count = 2 * int64_t(n.c);
  return push(m, n);
}

int add_maxpool(Model& m, int in, int kernel, int stride, int pad, const std::string& name) {
  const Node& src = m.nodes.at(in);
  Node n;
  n.kind = OpKind::maxpool, n.name = name, n.in0 = in, n.c = src.c;
  n.kernel = kernel, n.stride = stride, n.pad = pad;
  n.h = (src.h + 2 * pad - kernel) / stride + 1;
  n.w = (src.w + 2 * pad - kernel) / stride + 1;
  return push(m, n);
}

int add_global_avgpool(Model& m, int in, const std::string& name) {
  Node n;
  n.kind = OpKind::global_avgpool, n.name = name, n.in0 = in, n.c = m.nodes.at(in).c;
  return push(m, n);
}

int add_add(Model& m, int a, int b, const std::string& name) {
  const Node &na = m.nodes.at(a), &nb = m.nodes.at(b);
  TB_CHECK(na.c == nb.c && na.h == nb.h && na.w == nb.w, "{}: shapes differ ({}x{}x{} vs {}x{}x{})",
           name, na.c, na.h, na.w, nb.c, nb.h, nb.w);
  Node n;
  n.kind = OpKind::add, n.name = name, n.in0 = a, n.in1 = b, n.c = na.c, n.h = na.h, n.w = na.w;
  return push(m, n);
}

Model build_mlp(int channels, int height, int width, const std::vector<int>& hidden, int classes,
                Init init) {
  Model m;
  m.name = "mlp";
  m.classes = classes;
  int x = add_input(m, channels, height, width);
  for (size_t i = 0; i < hidden.size(); ++i) {
    x = add_dense(m, x, hidden[i], true, init, fmt::format("dense{}", i + 1));
    x = add_relu(m, x, fmt::format("relu{}", i + 1));
  }
  add_dense(m, x, classes, true, init, fmt::format("dense{}", hidden.size() + 1));
  return m;
}

int add_bottleneck(Model& m, int in, int width, int stride, const std::string& name) {
  const int out_channels = width * 4;
  int x = add_conv(m, in, width, 1, 1, 0, name + ".conv1");
  x = add_relu(m, add_batchnorm(m, x, name + ".bn1"), name + ".relu1");
  x = add_conv(m, x, width, 3, stride, 1, name + ".conv2");  // v1.5: stride on the 3x3
  x = add_relu(m, add_batchnorm(m, x, name + ".bn2"), name + ".relu2");
  x = add_conv(m, x, out_channels, 1, 1, 0, name + ".conv3");
  x = add_batchnorm(m, x, name + ".bn3");
  int shortcut = in;
  if (stride != 1 || m.nodes[in].c != out_channels) {
    shortcut = add_conv(m, in, out_channels, 1, stride, 0, name + ".downsample.conv");
    shortcut = add_batchnorm(m, shortcut, name + ".downsample.bn");
  }
  return add_relu(m, add_add(m, x, shortcut, name + ".add"), name + ".relu3");
}

Model build_resnet(const ResNetSpec& spec, int classes, int channels, int height, int width) {
  Model m;
  m.name = spec.name;
  m.classes = classes;
  int x = add_input(m, channels, height, width);
  x = add_conv(m, x, spec.stem_width, 7, 2, 3, "conv1");
  x = add_relu(m, add_batchnorm(m, x, "bn1"), "relu");
  x = add_maxpool(m, x, 3, 2, 1, "maxpool");
  for (int stage = 0; stage < 4; ++stage)
    for (int b = 0; b < spec.blocks[stage]; ++b)
      x = add_bottleneck(m, x, spec.widths[stage], (b == 0 && stage > 0) ? 2 : 1,
                         fmt::format("layer{}.{}", stage + 1, b));
  x = add_global_avgpool(m, x, "avgpool");
  add_dense(m, x, classes, true, Init::torch_linear, "fc");
  return m;
}

Model build_resnet50(int classes, int channels, int height, int width) {
  return build_resnet(ResNetSpec{}, classes, channels, height, width);
}

int64_t node_macs(const Model& m, const Node& n) {
  if (n.kind == OpKind::dense) return int64_t(n.c) * m.nodes[n.in0].out_size();
  if (n.kind == OpKind::conv2d)
    return int64_t(n.c) * n.h * n.w * m.nodes[n.in0].c * n.kernel * n.kernel;
  return 0;
}

int64_t Model::macs_per_image() const {
  int64_t total = 0;
  for (const Node& n : nodes) total += node_macs(*this, n);
  return total;
}

int64_t Model::conv_macs_per_image() const {
  int64_t total = 0;
  for (const Node& n : nodes)
    if (n.kind == OpKind::conv2d) total += node_macs(*this, n);
  return total;
}

std::string Model::summary() const {
  std::string s = fmt::format("{:<4} {:<28} {:<15} {:>16} {:>12} {:>14}\n", "#", "name", "op",
                              "output (c,h,w)", "params", "MACs/image");
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    std::string inputs = n.in1 >= 0   ? fmt::format(" <- {},{}", n.in0, n.in1)
                         : n.in0 >= 0 ? fmt::format(" <- {}", n.in0)
                                      : std::string();
    s += fmt::format("{:<4} {:<28} {:<15} {:>16} {:>12} {:>14}\n", i, n.name + inputs,
                     op_name(n.kind), fmt::format("{}x{}x{}", n.c, n.h, n.w), n.param_count,
                     node_macs(*this, n));
  }
  s += fmt::format("{}: {} parameters, {} multiply-adds per image forward ({} in convolutions)\n",
                   name, param_count, macs_per_image(), conv_macs_per_image());
  return s;
}

}  // namespace tb
