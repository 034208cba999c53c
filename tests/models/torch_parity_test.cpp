// Parity with PyTorch: fixtures made by tests/fixtures/make_torch_fixtures.py (float64 PyTorch,
// stored as float32) for a reduced ResNet v1.5 and one bottleneck block. Each backend that runs
// here (the plain-loop reference, oneDNN, CUDA fp32 on a GPU machine) loads the same weights and
// input and must give the same logits, loss, every parameter's gradient, the BN running statistics,
// the parameters after one Adam step and the eval-mode logits.
//
// Tolerances are relative L2 errors, per parameter tensor (so a wrong small layer cannot hide
// behind a big one). The worst seen over both backends (2026-11-27): logits 2.8e-6, eval logits
// 2.8e-6, gradients 8.1e-6, Adam moves 8.9e-5, BN state 4e-8, block y 1.7e-7 and dx 1.8e-7. The
// bounds sit about 10x above those and far below what a real bug gives (a swapped tap, a wrong
// stride or a missed term is O(1e-1..1)).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>

#include "../test_util.h"
#include "backends/backend.h"
#include "models/model.h"
#include "train/checkpoint.h"
#include "train/executor.h"
#include "train/runner.h"
#include "train/workload.h"

#ifdef TRAINBENCH_HAVE_CUDA
#include "backends/cuda/cuda_info.h"
#endif

namespace tb {
namespace {

struct FixtureTensor {
  std::vector<int64_t> dims;
  std::vector<float> data;
};
using Fixture = std::map<std::string, FixtureTensor>;

// "tbfx 1", then per tensor a line "NAME NDIM D0 D1 ..." and prod(D) little-endian float32.
// Looked up in the source tree the binary was built from, else under the current directory
// (a prebuilt test binary run from another checkout, as bench/device/quick.sh does).
Fixture read_fixture(const std::string& name) {
  std::string path = std::string(TRAINBENCH_SOURCE_DIR) + "/tests/fixtures/" + name;
  if (!std::filesystem::exists(path)) path = "tests/fixtures/" + name;
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::string line;
  std::getline(f, line);
  if (line != "tbfx 1") throw std::runtime_error(path + ": not a tbfx 1 file");
  Fixture fx;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string tensor;
    int ndim = 0;
    in >> tensor >> ndim;
    FixtureTensor t;
    int64_t count = 1;
    for (int i = 0; i < ndim; ++i) {
      int64_t d = 0;
      in >> d;
      t.dims.push_back(d), count *= d;
    }
    if (!in || count <= 0) throw std::runtime_error(path + ": bad header '" + line + "'");
    t.data.resize(size_t(count));
    f.read(reinterpret_cast<char*>(t.data.data()), std::streamsize(count * sizeof(float)));
    if (!f) throw std::runtime_error(path + ": " + tensor + " is cut short");
    fx[tensor] = std::move(t);
  }
  return fx;
}

const std::vector<float>& get(const Fixture& fx, const std::string& name) {
  auto it = fx.find(name);
  if (it == fx.end()) throw std::runtime_error("fixture has no tensor " + name);
  return it->second.data;
}

using testing::rel_err;

// v [n, c, hw] laid out as `from` says, in layout `to`.
std::vector<float> relayout(const std::vector<float>& v, int64_t n, int64_t c, int64_t hw,
                            Layout to, Layout from) {
  if (to == from) return v;
  std::vector<float> out(v.size());
  testing::transpose_maps(v.data(), out.data(), n, c, hw, to == Layout::nhwc);
  return out;
}

std::vector<float> download(Backend& be, const float* p, int64_t count) {
  std::vector<float> host(static_cast<size_t>(count));
  be.download(be.ctx, host.data(), p, size_t(count) * sizeof(float));
  return host;
}

// Each parameter tensor of each node (conv weight; BN gamma and beta; dense weight and bias).
void expect_params_close(const Model& m, const std::vector<float>& got,
                         const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (const Node& n : m.nodes) {
    if (n.param_offset < 0) continue;
    std::vector<std::pair<std::string, int64_t>> parts;  // (name, count), in slot order
    if (n.kind == OpKind::batchnorm)
      parts = {{"gamma", n.c}, {"beta", n.c}};
    else if (n.kind == OpKind::dense && n.bias)
      parts = {{"weight", n.param_count - n.c}, {"bias", n.c}};
    else
      parts = {{"weight", n.param_count}};
    int64_t at = n.param_offset;
    for (const auto& [part, count] : parts) {
      EXPECT_LT(rel_err(got.data() + at, want.data() + at, size_t(count)), tol)
          << what << " of " << n.name << "." << part;
      at += count;
    }
  }
}

// Every fp32 backend this machine can run: the reference, oneDNN, and CUDA where a GPU is.
std::vector<std::unique_ptr<Backend>> backends_here() {
  std::vector<std::unique_ptr<Backend>> v;
  v.push_back(make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, /*reference=*/true}));
  v.push_back(make_backend({DeviceKind::cpu, 0, Precision::fp32, 2, false}));
#ifdef TRAINBENCH_HAVE_CUDA
  if (cuda_device_count() > 0) v.push_back(make_backend({DeviceKind::cuda, 0, Precision::fp32}));
#endif
  return v;
}

TEST(TorchParity, ReducedResNetTrainingStep) {
  const Fixture fx = read_fixture("resnet_tiny.tbfx");
  ResNetSpec spec;
  spec.name = "resnet_tiny", spec.stem_width = 8;
  const int blocks[4] = {2, 1, 1, 1}, widths[4] = {4, 8, 16, 32};
  std::copy(blocks, blocks + 4, spec.blocks), std::copy(widths, widths + 4, spec.widths);
  const Model m = build_resnet(spec, 10, 3, 32, 32);
  const std::vector<float>& params = get(fx, "params");
  ASSERT_EQ(m.param_count, int64_t(params.size()));
  ASSERT_EQ(m.state_count, int64_t(get(fx, "state").size()));

  const int64_t n = 8;
  DatasetPair data;
  for (Dataset* s : {&data.train, &data.test}) {
    s->name = "cifar10", s->count = n, s->channels = 3, s->height = 32, s->width = 32;
    s->classes = 10;
    for (float v : get(fx, "images")) s->images.push_back(uint8_t(v));
    for (float v : get(fx, "labels")) s->labels.push_back(uint8_t(v));
  }
  const Workload& w = find_workload("resnet50-cifar10");  // its normalisation and Adam settings
  Hyper hp = w.defaults;
  hp.batch = n;
  hp.augment = false;

  for (auto& be : backends_here()) {
    SCOPED_TRACE(be->name);
    Executor t(m, *be, hp, w, data);
    t.upload_params(params);
    be->fill(be->ctx, t.buffers().metrics, 0.f, 4);
    t.step(n, nullptr);  // the training set in order (the executor's start)

    const int last = int(m.nodes.size()) - 1;
    const auto logits = download(*be, t.buffers().out[last], n * 10);
    EXPECT_LT(rel_err(logits.data(), get(fx, "logits").data(), logits.size()), 3e-5) << "logits";
    const auto metrics = download(*be, t.buffers().metrics, 1);
    EXPECT_NEAR(metrics[0] / float(n), get(fx, "loss")[0], 1e-5 * get(fx, "loss")[0]) << "loss";
    expect_params_close(m, download(*be, t.buffers().grads, m.param_count), get(fx, "grads"), 2e-4,
                        "gradient");
    const auto state = download(*be, t.buffers().state, m.state_count);
    EXPECT_LT(rel_err(state.data(), get(fx, "state").data(), state.size()), 1e-6) << "BN state";
    // One Adam step moves a weight by lr * g / (|g| + 1e-7), about lr = 1e-3: compare the moves
    // themselves. Where the exact gradient is below 1e-6 (a dead ReLU channel's is 0 in exact
    // arithmetic and rounding noise in float32) the move is noise / (noise + eps): not compared.
    std::vector<float> moved = t.download_params(), want = get(fx, "params_after");
    const std::vector<float>& exact_grad = get(fx, "grads");
    for (size_t i = 0; i < moved.size(); ++i) {
      const bool meaningful = std::fabs(exact_grad[i]) >= 1e-6f;
      moved[i] = meaningful ? moved[i] - params[i] : 0.f;
      want[i] = meaningful ? want[i] - params[i] : 0.f;
    }
    expect_params_close(m, moved, want, 1e-3, "Adam step");

    // Eval mode after the step: running statistics instead of batch statistics.
    t.load_batch(t.test_spec(), t.buffers().test_images, t.buffers().test_labels,
                 t.buffers().test_indices, n, 0);
    t.forward(n, /*training=*/false);
    const auto eval_logits = download(*be, t.buffers().out[last], n * 10);
    EXPECT_LT(rel_err(eval_logits.data(), get(fx, "eval_logits").data(), eval_logits.size()), 3e-5)
        << "eval logits";
  }
}

TEST(TorchParity, BottleneckBlockForwardBackward) {
  const Fixture fx = read_fixture("bottleneck.tbfx");
  // input -> relu (identity on the fixture's x >= 0; its output gradient is the block's dx)
  // -> bottleneck 16 -> 8 -> 32, stride 2, projection shortcut.
  Model m;
  m.name = "bottleneck";
  m.classes = 10;
  int x = add_input(m, 16, 8, 8);
  x = add_relu(m, x, "pre");
  add_bottleneck(m, x, 8, 2, "block");
  const std::vector<float>& params = get(fx, "params");
  ASSERT_EQ(m.param_count, int64_t(params.size()));
  const int64_t n = 4, last = int64_t(m.nodes.size()) - 1;
  ASSERT_EQ(n * m.nodes[last].out_size(), int64_t(get(fx, "y").size()));

  DatasetPair data;  // the Executor wants one; the input is uploaded directly instead
  for (Dataset* s : {&data.train, &data.test}) {
    s->count = n, s->channels = 16, s->height = 8, s->width = 8, s->classes = 10;
    s->images.assign(size_t(n * 16 * 64), 0), s->labels.assign(size_t(n), 0);
  }
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = n;

  for (auto& be : backends_here()) {
    SCOPED_TRACE(be->name);
    Executor t(m, *be, hp, w, data);
    t.upload_params(params);
    // The fixture's maps are NCHW; the executor's are laid out as its plan says.
    const Layout layout = t.plan().layout;
    auto relaid = [&](const std::vector<float>& v, const Node& node, bool to_plan) {
      return relayout(v, n, node.c, int64_t(node.h) * node.w, to_plan ? layout : Layout::nchw,
                      to_plan ? Layout::nchw : layout);
    };
    const Node &in = m.nodes[0], &out = m.nodes[size_t(last)];
    const auto xs = relaid(get(fx, "x"), in, true);
    be->upload(be->ctx, t.buffers().out[0], xs.data(), xs.size() * sizeof(float));
    t.forward(n, /*training=*/true);
    const auto y = relaid(download(*be, t.buffers().out[last], n * out.out_size()), out, false);
    EXPECT_LT(rel_err(y.data(), get(fx, "y").data(), y.size()), 2e-6) << "y";

    const auto dy = relaid(get(fx, "dy"), out, true);
    be->upload(be->ctx, t.buffers().grad[last], dy.data(), dy.size() * sizeof(float));
    t.backward(n);
    const auto dx =
        relaid(download(*be, t.buffers().grad[1], int64_t(xs.size())), m.nodes[1], false);
    EXPECT_LT(rel_err(dx.data(), get(fx, "dx").data(), dx.size()), 2e-6) << "dx";
    expect_params_close(m, download(*be, t.buffers().grads, m.param_count), get(fx, "grads"), 2e-5,
                        "gradient");
    const auto state = download(*be, t.buffers().state, m.state_count);
    EXPECT_LT(rel_err(state.data(), get(fx, "state").data(), state.size()), 1e-6) << "BN state";
  }
}

}  // namespace
}  // namespace tb
