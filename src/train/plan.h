// The execution plan: the model's node list, compiled once against what the backend can fuse,
// into the ordered forward and backward steps of a training step. Each step names its op (a
// fused op is its own step: dense_relu, bn_relu, bn_add_relu), the nodes whose buffers it reads
// and writes, and the nodes it covers (their cost is its cost). The executor issues the steps,
// the arena is laid out from the buffers the plan keeps, the profile attributes time by step,
// and the FLOP total sums the steps' nodes. Nothing is decided about fusion after this.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "models/cost.h"
#include "models/model.h"

namespace tb {

struct Backend;

// What the backend can run fused (its optional table entries) and whether the step may run as
// the backend's whole fused MLP step.
struct PlanCaps {
  bool bn_relu = false;          // batchnorm_relu_{forward_train,forward_eval,backward}
  bool bn_add_relu = false;      // batchnorm_add_relu_forward_{train,eval}
  bool mlp_step = false;         // Backend::mlp_step
  bool nhwc = false;             // Backend::nhwc: the ops take NHWC activations
  bool bf16_conv_grads = false;  // Backend::bf16_conv_grads
  bool bf16_maps = false;        // Backend::bf16_maps
};
PlanCaps plan_caps(const Backend& be);

enum class ForwardOp : uint8_t {
  dense,
  dense_relu,  // dense with the ReLU after it (the ReLU's backward stays its own step)
  relu,
  add,
  bn_add_relu,  // batch norm, the residual add of a skip after it and the ReLU after that
  conv2d,
  batchnorm,
  bn_relu,  // batch norm with the ReLU after it, both directions
  maxpool,
  global_avgpool,
};

enum class BackwardOp : uint8_t {
  dense,
  relu,
  add,  // hands dy on to both inputs
  conv2d,
  batchnorm,
  bn_relu,  // from the ReLU's output and gradient straight to BN's input gradient
  maxpool,
  global_avgpool,
};

const char* op_name(ForwardOp op);
const char* op_name(BackwardOp op);

// Where a backward step writes an input's gradient: straight into its buffer (the first writer;
// later consumers run first in a backward pass), or into scratch and then added to it (a later
// writer), or not at all (the model's input; an add whose input already shares its buffer).
enum class GradWrite : uint8_t { none, first, accumulate, shared };

struct ForwardStep {
  ForwardOp op;
  int node;                 // whose parameters, cache and time: the dense, BN or add
  int x = -1, skip = -1;    // nodes read (bn_add_relu: x is the BN's input, skip the other)
  int bn = -1;              // bn_add_relu: the batch norm it runs
  int writes;               // the node whose output buffer is written (the ReLU when fused)
  std::vector<int> covers;  // every node it computes, `node` first
};

struct BackwardStep {
  BackwardOp op;
  int node;     // whose parameters, cache and time
  int dy_node;  // whose gradient is read (bn_relu: the ReLU's)
  GradWrite dx = GradWrite::none, dskip = GradWrite::none;  // into in0 / (add) in1
};

// The fused whole-step alternative: Backend::mlp_step runs forward, loss, backward and Adam of a
// one-hidden-layer MLP in three kernels. It replaces every step at once, which is why it is not
// one step among the others.
struct MlpShape {
  bool fits = false;
  int64_t in = 0, hidden = 0, classes = 0;
};

struct Plan {
  // How every 4-D activation and its gradient lies (the network's input included): NHWC where
  // the backend takes it and no dense layer reads a map of several channels (its weights are
  // laid out for NCHW's flattening, as PyTorch's are); NCHW otherwise.
  Layout layout = Layout::nchw;
  std::vector<ForwardStep> forward;
  std::vector<BackwardStep> backward;
  // Per node: whether its output has a buffer (fused-away outputs never exist), and the node
  // whose gradient buffer it uses (itself, an add whose gradient it takes unchanged, or -1).
  std::vector<uint8_t> has_out;
  std::vector<int> grad_buffer;
  // Per node: its gradient is stored in bf16 (PlanCaps::bf16_conv_grads): a convolution whose
  // gradient only the batch norm after it writes, under NHWC.
  std::vector<uint8_t> grad_bf16;
  // Per node: its output buffer holds bf16 (PlanCaps::bf16_maps, NHWC): a convolution that only
  // batch norms read, or the output of a batch norm step (its fused ReLU's) that only
  // convolutions read and no backward step but its own (bn_relu) reads again.
  std::vector<uint8_t> out_bf16;
  MlpShape mlp;

  // The forward step that computes node i, and the backward step that runs its backward
  // (-1 where none does).
  std::vector<int> forward_of, backward_of;

  // Cost of a step for n images: the sum over the nodes it covers (the FLOPs a step does are
  // its nodes'; a fused-away node moves no bytes forward of its own).
  NodeCost cost(const Model& m, const ForwardStep& s, int64_t n) const;
  NodeCost cost(const Model& m, const BackwardStep& s, int64_t n) const;
  // Training FLOPs per image, walking the steps (equal to train_flops_per_image).
  double train_flops_per_image(const Model& m) const;
};

// Compiles m for a backend with caps; `trains` false: only the forward (a test-only executor).
// mlp_allowed: the run's optimizer and data path allow the fused MLP step (Adam, no augmentation).
Plan compile_plan(const Model& m, const PlanCaps& caps, bool trains, bool mlp_allowed);

// One line per step, forward then backward (debugging, `trainbench profile`).
std::string describe_plan(const Model& m, const Plan& p);

}  // namespace tb
