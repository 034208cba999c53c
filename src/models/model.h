// A model is data: a list of nodes in topological order. Each node names its op, its inputs (by
// index; two for a residual add), its output shape per image, its hyper-parameters and where its
// parameters live in the one flat parameter array. Printing the list shows the network.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tb {

enum class OpKind : uint8_t { input, dense, relu, conv2d, batchnorm, maxpool, global_avgpool, add };
const char* op_name(OpKind k);

// How a node's weights are initialised (the biases / BN shifts always start at zero).
enum class Init : uint8_t {
  none,
  glorot_uniform,          // Keras' default: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
  torch_linear,            // PyTorch Linear: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  kaiming_normal_fan_out,  // torchvision ResNet convs: N(0, 2 / (k * r * s))
  batchnorm,               // gamma 1, beta 0, running mean 0, running var 1
};

struct Node {
  OpKind kind = OpKind::input;
  std::string name;
  int in0 = -1, in1 = -1;               // input node indices
  int c = 0, h = 1, w = 1;              // output shape per image (dense: c = features)
  int kernel = 0, stride = 1, pad = 0;  // conv2d, maxpool
  bool bias = false;                    // dense
  Init init = Init::none;
  // Parameter slots in the flat parameter array (and the same offsets in the gradient array).
  // dense: weight [out, in] then bias [out]; conv2d: weight [k, c, r, s]; batchnorm: gamma, beta.
  int64_t param_offset = -1, param_count = 0;
  // Non-trained state (batchnorm running mean then running var) in the flat state array.
  int64_t state_offset = -1, state_count = 0;

  int64_t out_size() const { return int64_t(c) * h * w; }
};

struct Model {
  std::string name;
  std::vector<Node> nodes;
  int classes = 0;
  int64_t param_count = 0;  // trainable
  int64_t state_count = 0;  // batchnorm running statistics

  const Node& output() const { return nodes.back(); }
  int64_t macs_per_image() const;  // forward multiply-adds for one image
  int64_t conv_macs_per_image() const;
  std::string summary() const;  // one line per node, then totals
};

// Builders. Each adds nodes with shapes and parameter slots filled in.
Model build_mlp(int channels, int height, int width, const std::vector<int>& hidden, int classes,
                Init init = Init::glorot_uniform);
// ResNet v1.5 with bottleneck blocks: 7x7/2 stem, BN, ReLU, 3x3/2 max-pool, four stages (the
// first block of stages 2-4 strides 2 on its 3x3), global average pool, dense. The defaults are
// ResNet-50; tests build smaller ones with the same structure.
struct ResNetSpec {
  std::string name = "resnet50";
  int stem_width = 64;
  int blocks[4] = {3, 4, 6, 3};
  int widths[4] = {64, 128, 256, 512};  // bottleneck widths; outputs are 4x
};
Model build_resnet(const ResNetSpec& spec, int classes, int channels, int height, int width);
Model build_resnet50(int classes, int channels = 3, int height = 32, int width = 32);

// The pieces builders use (handy for tests that build one block).
int add_input(Model& m, int c, int h, int w);
int add_dense(Model& m, int in, int features, bool bias, Init init, const std::string& name);
int add_relu(Model& m, int in, const std::string& name);
int add_conv(Model& m, int in, int out_channels, int kernel, int stride, int pad,
             const std::string& name);
int add_batchnorm(Model& m, int in, const std::string& name);
int add_maxpool(Model& m, int in, int kernel, int stride, int pad, const std::string& name);
int add_global_avgpool(Model& m, int in, const std::string& name);
int add_add(Model& m, int a, int b, const std::string& name);
// One ResNet v1.5 bottleneck (1x1, 3x3 with the stride, 1x1 x4, projection when needed).
int add_bottleneck(Model& m, int in, int width, int stride, const std::string& name);

// Forward multiply-adds of node n for one image (dense and conv; 0 for the others).
int64_t node_macs(const Model& m, const Node& n);

}  // namespace tb
