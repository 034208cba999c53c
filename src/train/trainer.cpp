#include "train/trainer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/memory.h"
#include "train/checkpoint.h"
#include "train/init.h"

namespace tb {

using Clock = std::chrono::steady_clock;
static double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// ---------------------------------------------------------------------------------------------
// Planning: every buffer's size is known from the model and the largest batch, so the arena is
// laid out once here and carved into pointers (llm.c's malloc_and_point_parameters).

// The offset of a buffer that a node does not get (its pointer is null).
constexpr size_t kNoBuffer = ~size_t(0);

Trainer::ArenaLayout Trainer::layout_arena(int64_t batch) const {
  ArenaLayout L;
  auto take = [&L](size_t bytes) {
    const size_t at = L.total;
    L.total += align_up(bytes);
    return at;
  };
  const size_t f = sizeof(float), nodes = model.nodes.size();
  const int64_t P = model.param_count;
  auto train_only = [&](size_t bytes) { return trains() ? take(bytes) : kNoBuffer; };
  L.params = take(P * f), L.grads = train_only(P * f), L.m = train_only(P * f);
  L.v = train_only(P * f);
  L.state = take(std::max<int64_t>(model.state_count, 1) * f);
  L.out.resize(nodes), L.grad.resize(nodes), L.saved.resize(nodes), L.argmax.resize(nodes);
  int64_t largest = 0;
  for (size_t i = 0; i < nodes; ++i) {
    const Node& n = model.nodes[i];
    const int64_t count = batch * n.out_size();
    largest = std::max(largest, count);
    // A node that computes the ReLU after it (or a BN and add fused with theirs) writes the
    // ReLU's output, never its own; a batch norm fused both ways reads the ReLU's gradient,
    // never its own.
    const bool no_out =
        relu_fusion[i] != ReluFusion::none || bn_of_add[i] >= 0 || add_of_bn[i] >= 0;
    const bool no_grad = i == 0 || grad_of_add[i] >= 0 || relu_fusion[i] == ReluFusion::both;
    L.out[i] = no_out ? kNoBuffer : take(count * f);
    L.grad[i] = no_grad ? kNoBuffer : train_only(count * f);
    L.saved[i] = n.kind == OpKind::batchnorm ? take(2 * n.c * f) : 0;
    L.argmax[i] = n.kind == OpKind::maxpool ? take(count * sizeof(int32_t)) : 0;
  }
  L.scratch = train_only(largest * f), L.labels = take(batch * sizeof(int32_t));
  L.metrics = take(4 * f), L.cursor = take(sizeof(StepCursor));
  L.eval_cursor = take(sizeof(StepCursor));
  L.train_idx = train_only(train_count * sizeof(int32_t));
  L.test_idx = take(test_count * sizeof(int32_t));
  return L;
}

void Trainer::require_training(const char* what) const {
  TB_CHECK(trains(), "Trainer::{}: this Trainer was made for test passes only", what);
}

void Trainer::free_buffers() {
  if (be.set_param_array && arena) be.set_param_array(be.ctx, params, 0);
  for (void** p :
       {reinterpret_cast<void**>(&train_images), reinterpret_cast<void**>(&train_labels),
        reinterpret_cast<void**>(&test_images), reinterpret_cast<void**>(&test_labels), &arena}) {
    if (*p) be.free(be.ctx, *p);
    *p = nullptr;
  }
}

OutOfMemory Trainer::out_of_memory(const OutOfMemory& e, size_t taken, size_t data_bytes) const {
  const double mib = 1.0 / 1048576.0;
  if (e.available == 0)  // the backend cannot say how much is free
    return OutOfMemory(
        fmt::format("{}; batch {} needs {:.1f} MiB for the run and {:.1f} MiB for "
                    "the data set",
                    e.what(), max_batch, layout_arena(max_batch).total * mib, data_bytes * mib),
        e.requested, e.available);
  // What was free when the run asked: what the backend reports now plus what the run had taken.
  const size_t free_bytes = e.available + taken;
  auto fits = [&](int64_t b) { return layout_arena(b).total + data_bytes <= free_bytes; };
  int64_t lo = 0, hi = max_batch;  // fits(lo) (or lo == 0), !fits(hi)
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  const std::string advice =
      lo > 0 ? fmt::format(
                   "the largest batch that fits is {} (--batch {}; the backend's own workspaces "
                   "come on top)",
                   lo, lo)
             : std::string("not even batch 1 fits: the data set or the model is too large for it");
  return OutOfMemory(
      fmt::format("out of memory on {}: batch {} needs {:.1f} MiB for the run and {:.1f} MiB for "
                  "the data set, {:.1f} MiB are free; {}",
                  be.name, max_batch, layout_arena(max_batch).total * mib, data_bytes * mib,
                  free_bytes * mib, advice),
      e.requested, e.available);
}

Trainer::Trainer(const Model& m, Backend& b, const Hyper& h, const Workload& w,
                 const DatasetPair& data, TrainerUse u)
    : model(m), be(b), hp(h), workload(w), use(u) {
  TB_CHECK(hp.batch > 0, "--batch must be positive");
  TB_CHECK(data.train.count > 0 && data.test.count > 0, "empty data set");
  TB_CHECK(data.train.image_size() == m.nodes[0].out_size(),
           "data images are {}x{}x{}, the model expects {}x{}x{}", data.train.channels,
           data.train.height, data.train.width, m.nodes[0].c, m.nodes[0].h, m.nodes[0].w);
  train_count = data.train.count, test_count = data.test.count;
  max_batch =
      std::min<int64_t>(hp.batch, trains() ? std::max(train_count, test_count) : test_count);
  const size_t nodes = m.nodes.size();

  consumers.assign(nodes, 0);
  grad_written.assign(nodes, 0);
  for (const Node& n : m.nodes) {
    if (n.in0 >= 0) consumers[n.in0]++;
    if (n.in1 >= 0) consumers[n.in1]++;
  }
  // A dense or BN node whose one consumer is the ReLU right after it computes that ReLU too
  // (BN only where the backend has the fused entries).
  relu_fusion.assign(nodes, ReluFusion::none);
  const bool bn_relu = be.batchnorm_relu_forward_train && be.batchnorm_relu_forward_eval &&
                       be.batchnorm_relu_backward;
  for (size_t i = 0; i + 1 < nodes; ++i) {
    const OpKind k = m.nodes[i].kind;
    if (m.nodes[i + 1].kind != OpKind::relu || m.nodes[i + 1].in0 != int(i) || consumers[i] != 1)
      continue;
    if (k == OpKind::dense) relu_fusion[i] = ReluFusion::forward;
    if (k == OpKind::batchnorm && bn_relu) relu_fusion[i] = ReluFusion::both;
  }

  bn_of_add.assign(nodes, -1), add_of_bn.assign(nodes, -1);
  if (be.batchnorm_add_relu_forward_train && be.batchnorm_add_relu_forward_eval) {
    for (size_t j = 0; j + 1 < nodes; ++j) {
      const Node& a = m.nodes[j];
      if (a.kind != OpKind::add || a.in0 == a.in1 || consumers[j] != 1 ||
          m.nodes[j + 1].kind != OpKind::relu || m.nodes[j + 1].in0 != int(j))
        continue;
      for (int in : {a.in0, a.in1}) {
        if (m.nodes[in].kind != OpKind::batchnorm || consumers[in] != 1 ||
            relu_fusion[in] != ReluFusion::none)
          continue;
        bn_of_add[j] = in, add_of_bn[in] = int(j);
        break;
      }
    }
  }

  // input -> dense (+ReLU) -> dense, parameters [W1 | b1 | W2 | b2]: Backend::mlp_step's shape.
  {
    const std::vector<Node>& N = m.nodes;
    mlp_fusable = N.size() == 4 && N[1].kind == OpKind::dense && N[1].in0 == 0 && N[1].bias &&
                  N[2].kind == OpKind::relu && N[2].in0 == 1 && N[3].kind == OpKind::dense &&
                  N[3].in0 == 2 && N[3].bias && relu_fusion[1] == ReluFusion::forward &&
                  N[1].param_offset == 0 && N[3].param_offset == N[1].param_count &&
                  N[3].param_count == (N[1].c + 1) * N[3].c &&
                  m.param_count == N[1].param_count + N[3].param_count && m.classes == N[3].c &&
                  hp.optimizer != "sgd" && !hp.augment;
  }

  // A node whose one consumer is a residual add gets the add's gradient unchanged: it shares
  // the add's gradient buffer instead of receiving a copy (ResNet: every bn3 and projection BN).
  grad_of_add.assign(nodes, -1);
  std::vector<int> last_consumer(nodes, -1);
  for (size_t i = 0; i < nodes; ++i)
    for (int in : {m.nodes[i].in0, m.nodes[i].in1})
      if (in >= 0) last_consumer[size_t(in)] = int(i);
  for (size_t i = 0; i < nodes; ++i) {
    const Node& n = m.nodes[i];
    if (n.kind != OpKind::add || n.in0 == n.in1) continue;
    for (int in : {n.in0, n.in1})
      if (in > 0 && consumers[in] == 1) grad_of_add[in] = int(i);
  }
  // So does a node read by the add and by others before it, where the add's gradient has been
  // read by everything that reads it before those others add theirs (ResNet's identity
  // shortcut: the block input's gradient starts as the add's, which the block's bn3 reads; the
  // block's conv1, earlier in the list and so later in the backward, then adds its part).
  for (size_t i = 0; i < nodes; ++i) {
    const Node& n = m.nodes[i];
    if (n.kind != OpKind::add || n.in0 == n.in1) continue;
    int first_reader = int(i);  // the lowest node that reads grad[i]: the add or a sharer
    for (int in : {n.in0, n.in1})
      if (grad_of_add[in] == int(i)) first_reader = std::min(first_reader, in);
    for (int in : {n.in0, n.in1}) {
      if (in <= 0 || consumers[in] == 1 || last_consumer[in] != int(i)) continue;
      bool others_earlier = true;  // every other consumer's backward runs after the readers'
      for (size_t k = size_t(in) + 1; k < i; ++k)
        if ((m.nodes[k].in0 == in || m.nodes[k].in1 == in) && int(k) >= first_reader)
          others_earlier = false;
      if (others_earlier) grad_of_add[in] = int(i);
    }
  }

  // The arena, then the data set (uint8, as read), in one try: on running out of memory,
  // everything taken so far goes back and the error says which batch would fit.
  const ArenaLayout L = layout_arena(max_batch);
  // The test set, and the training set where this Trainer trains.
  const std::vector<uint8_t>* sets[4] = {&data.test.images, &data.test.labels, &data.train.images,
                                         &data.train.labels};
  uint8_t** set_ptrs[4] = {&test_images, &test_labels, &train_images, &train_labels};
  const int uploads = trains() ? 4 : 2;
  size_t data_bytes = 0;
  for (int k = 0; k < uploads; ++k) data_bytes += align_up(sets[k]->size());
  size_t taken = 0;
  try {
    arena = be.alloc(be.ctx, L.total);
    taken += L.total;
    for (int k = 0; k < uploads; ++k) {
      *set_ptrs[k] = static_cast<uint8_t*>(be.alloc(be.ctx, sets[k]->size()));
      taken += align_up(sets[k]->size());
    }
  } catch (const OutOfMemory& e) {
    free_buffers();
    throw out_of_memory(e, taken, data_bytes);
  }
  for (int k = 0; k < uploads; ++k)
    be.upload(be.ctx, *set_ptrs[k], sets[k]->data(), sets[k]->size());

  char* base = static_cast<char*>(arena);
  auto F = [base](size_t off) {
    return off == kNoBuffer ? nullptr : reinterpret_cast<float*>(base + off);
  };
  auto I = [base](size_t off) {
    return off == kNoBuffer ? nullptr : reinterpret_cast<int32_t*>(base + off);
  };
  params = F(L.params), grads = F(L.grads), opt_m = F(L.m), opt_v = F(L.v), state = F(L.state);
  out.resize(nodes), grad.resize(nodes), saved.resize(nodes), argmax.resize(nodes);
  for (size_t i = 0; i < nodes; ++i) {
    const size_t g = grad_of_add[i] >= 0 ? L.grad[size_t(grad_of_add[i])] : L.grad[i];
    out[i] = F(L.out[i]);
    grad[i] = F(g);
    saved[i] = m.nodes[i].kind == OpKind::batchnorm ? F(L.saved[i]) : nullptr;
    argmax[i] = m.nodes[i].kind == OpKind::maxpool ? I(L.argmax[i]) : nullptr;
  }
  scratch = F(L.scratch), labels = I(L.labels), metrics = F(L.metrics);
  cursor = reinterpret_cast<StepCursor*>(base + L.cursor);
  eval_cursor = reinterpret_cast<StepCursor*>(base + L.eval_cursor);
  train_indices = I(L.train_idx), test_indices = I(L.test_idx);

  try {
    fill_initial_state(data);
  } catch (...) {
    free_buffers();  // the destructor does not run for a constructor that throws
    throw;
  }
}

void Trainer::fill_initial_state(const DatasetPair& data) {
  const Model& m = model;
  const int64_t P = m.param_count;
  const size_t f = sizeof(float);
  // Parameters start on the host from the seed, then go up once.
  {
    auto host_params = host_alloc<float>(P), host_state = host_alloc<float>(m.state_count + 1);
    init_parameters(m, hp.seed, host_params.get(), host_state.get());
    be.upload(be.ctx, params, host_params.get(), P * f);
    if (m.state_count) be.upload(be.ctx, state, host_state.get(), m.state_count * f);
    if (be.set_param_array) be.set_param_array(be.ctx, params, P);
  }
  {
    std::vector<int32_t> iota(test_count);
    std::iota(iota.begin(), iota.end(), 0);
    be.upload(be.ctx, test_indices, iota.data(), test_count * sizeof(int32_t));
    // Until train() shuffles: the training set in order (tests step without train()).
    iota.resize(train_count);
    std::iota(iota.begin(), iota.end(), 0);
    if (train_indices) be.upload(be.ctx, train_indices, iota.data(), train_count * sizeof(int32_t));
  }
  StepCursor c;
  c.stride = hp.batch, c.count = train_count, c.epoch = 1, c.seed = hp.seed;
  be.upload(be.ctx, cursor, &c, sizeof(c));

  BatchSpec spec;
  spec.channels = data.train.channels, spec.height = data.train.height,
  spec.width = data.train.width;
  for (int c = 0; c < std::min(spec.channels, 3); ++c)
    spec.mean[c] = workload.mean[c], spec.inv_std[c] = 1.f / workload.std[c];
  train_spec = test_spec = spec;
  train_spec.augment = hp.augment;
  be.synchronize(be.ctx);
}

Trainer::~Trainer() {
  if (node_timers) be.timers_destroy(be.ctx, node_timers);
  for (Graphs* gs : {&step_graphs, &eval_graphs})  // they point into the caches
    for (auto& [n, g] : gs->by_size) be.graph_destroy(be.ctx, g);
  caches.clear();  // backend state first, while the backend lives
  free_buffers();
}

const std::vector<std::unique_ptr<OpCache>>& Trainer::training_caches() const {
  static const std::vector<std::unique_ptr<OpCache>> none;
  const auto it = caches.find(std::min<int64_t>(hp.batch, train_count));
  return it == caches.end() ? none : it->second;
}

std::vector<std::string> Trainer::node_notes() const {
  std::vector<std::string> notes(model.nodes.size());
  const auto& c = training_caches();
  for (size_t i = 0; i < c.size(); ++i) notes[i] = c[i]->note;
  return notes;
}

std::vector<std::optional<Precision>> Trainer::node_precisions() const {
  std::vector<std::optional<Precision>> p(model.nodes.size());
  const auto& c = training_caches();
  for (size_t i = 0; i < c.size(); ++i) p[i] = c[i]->precision;
  return p;
}

std::vector<std::unique_ptr<OpCache>>& Trainer::caches_for(int64_t n) {
  auto& v = caches[n];
  if (v.empty())
    for (size_t i = 0; i < model.nodes.size(); ++i) v.push_back(std::make_unique<OpCache>());
  return v;
}

// ---------------------------------------------------------------------------------------------
// Forward, backward and update over the node list.

static ConvDims conv_dims(const Model& m, const Node& n, int64_t batch) {
  const Node& src = m.nodes[n.in0];
  ConvDims d;
  d.n = batch, d.c = src.c, d.h = src.h, d.w = src.w;
  d.k = n.c, d.r = d.s = n.kernel, d.stride = n.stride, d.pad = n.pad;
  return d;
}
static PoolDims pool_dims(const Model& m, const Node& n, int64_t batch) {
  const Node& src = m.nodes[n.in0];
  PoolDims d;
  d.n = batch, d.c = src.c, d.h = src.h, d.w = src.w;
  d.kernel = n.kernel, d.stride = n.stride, d.pad = n.pad;
  return d;
}
static DenseDims dense_dims(const Model& m, const Node& n, int64_t batch) {
  return DenseDims{batch, m.nodes[n.in0].out_size(), n.c};
}

void Trainer::load_batch(const BatchSpec& base, const uint8_t* images, const uint8_t* lbls,
                         const int32_t* indices, int64_t n, uint64_t seed) {
  BatchSpec s = base;
  s.n = n, s.seed = seed;
  be.gather_batch(be.ctx, s, images, lbls, indices, out[0], labels);
}

void Trainer::load_train_batch(int64_t n) {
  BatchSpec s = train_spec;
  s.n = n, s.cursor = cursor;
  be.gather_batch(be.ctx, s, train_images, train_labels, train_indices, out[0], labels);
}

void Trainer::start_epoch(int64_t epoch, int64_t step) {
  // Two fields, not the whole cursor: the device counts the optimizer's updates.
  be.upload(be.ctx, &cursor->step, &step, sizeof(step));
  be.upload(be.ctx, &cursor->epoch, &epoch, sizeof(epoch));
}

// Profiling: adds each node's milliseconds into node_ms (nothing when node_ms is null). Where the
// backend has device timers, a mark goes before and after each node in stream order, behind the
// backend's gate, and all are read once at the end of the pass; elsewhere each node is timed with
// the host clock between synchronizes.
struct PassTimer {
  Trainer& t;
  std::vector<double>* node_ms;
  bool device;
  Clock::time_point t0;
  PassTimer(Trainer& tr, std::vector<double>* ms)
      : t(tr), node_ms(ms), device(ms && tr.be.timers_create) {
    if (!device) return;
    Backend& be = t.be;
    if (!t.node_timers) t.node_timers = be.timers_create(be.ctx, 1 + 2 * int(t.model.nodes.size()));
    t.marked_nodes.clear();
    be.timers_start(be.ctx, t.node_timers);
    be.timer_mark(be.ctx, t.node_timers, 0);
  }
  void begin() {
    if (!node_ms) return;
    Backend& be = t.be;
    if (device) {
      be.timer_mark(be.ctx, t.node_timers, 1 + 2 * int(t.marked_nodes.size()));
    } else {
      be.synchronize(be.ctx);
      t0 = Clock::now();
    }
  }
  void end(size_t node) {
    if (!node_ms) return;
    Backend& be = t.be;
    if (device) {
      be.timer_mark(be.ctx, t.node_timers, 2 + 2 * int(t.marked_nodes.size()));
      t.marked_nodes.push_back(node);
    } else {
      be.synchronize(be.ctx);
      (*node_ms)[node] += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    }
  }
  void finish() {
    if (!device) return;
    const size_t marked = t.marked_nodes.size();
    std::vector<float> ms(1 + 2 * marked);  // profiling only: a training step allocates nothing
    if (!t.be.timers_read(t.be.ctx, t.node_timers, int(ms.size()), ms.data()))
      t.host_paced_passes++;
    for (size_t k = 0; k < marked; ++k)
      (*node_ms)[t.marked_nodes[k]] += double(ms[2 + 2 * k]) - double(ms[1 + 2 * k]);
  }
};

void Trainer::forward(int64_t n, bool training, std::vector<double>* node_ms) {
  auto& cache = caches_for(n);
  const BnParams bn{1e-5f, 0.1f};
  PassTimer timer(*this, node_ms);
  for (size_t i = 1; i < model.nodes.size(); ++i) {
    const size_t timed = i;  // a fused ReLU advances i; the time is this node's
    timer.begin();
    const Node& node = model.nodes[i];
    OpCache& c = *cache[i];
    const float* x = out[node.in0];
    float* p = node.param_offset >= 0 ? params + node.param_offset : nullptr;
    switch (node.kind) {
      case OpKind::input:
        break;
      case OpKind::dense: {
        const DenseDims d = dense_dims(model, node, n);
        const float* bias = node.bias ? p + d.in * d.out : nullptr;
        if (relu_fusion[i] != ReluFusion::none) {
          be.dense_forward(be.ctx, c, d, x, p, bias, out[i + 1], true);
          ++i;  // the ReLU node's output is written
        } else {
          be.dense_forward(be.ctx, c, d, x, p, bias, out[i], false);
        }
        break;
      }
      case OpKind::relu:
        be.relu_forward(be.ctx, n * node.out_size(), x, out[i]);
        break;
      case OpKind::add:
        if (bn_of_add[i] >= 0) {
          // The batch norm feeding this add, the add and the ReLU after it, in one pass.
          const int b = bn_of_add[i];
          const Node& bn_node = model.nodes[size_t(b)];
          const float* skip = out[node.in0 == b ? node.in1 : node.in0];
          const BnDims d{n, bn_node.c, int64_t(bn_node.h) * bn_node.w};
          const float* xb = out[bn_node.in0];
          const float* gamma = params + bn_node.param_offset;
          float* rs = state + bn_node.state_offset;
          if (training)
            be.batchnorm_add_relu_forward_train(be.ctx, *cache[size_t(b)], d, bn, xb, skip, gamma,
                                                gamma + bn_node.c, out[i + 1], saved[size_t(b)],
                                                saved[size_t(b)] + bn_node.c, rs, rs + bn_node.c);
          else
            be.batchnorm_add_relu_forward_eval(be.ctx, *cache[size_t(b)], d, bn, xb, skip, gamma,
                                               gamma + bn_node.c, rs, rs + bn_node.c, out[i + 1]);
          ++i;  // the ReLU node's output is written
        } else {
          be.add(be.ctx, n * node.out_size(), x, out[node.in1], out[i]);
        }
        break;
      case OpKind::conv2d:
        be.conv2d_forward(be.ctx, c, conv_dims(model, node, n), x, p, out[i]);
        break;
      case OpKind::batchnorm: {
        if (add_of_bn[i] >= 0) break;  // runs at its add, fused with it and the ReLU after
        const BnDims d{n, node.c, int64_t(node.h) * node.w};
        float* rs = state + node.state_offset;
        if (relu_fusion[i] == ReluFusion::both) {
          if (training)
            be.batchnorm_relu_forward_train(be.ctx, c, d, bn, x, p, p + node.c, out[i + 1],
                                            saved[i], saved[i] + node.c, rs, rs + node.c);
          else
            be.batchnorm_relu_forward_eval(be.ctx, c, d, bn, x, p, p + node.c, rs, rs + node.c,
                                           out[i + 1]);
          ++i;  // the ReLU node's output is written
        } else if (training) {
          be.batchnorm_forward_train(be.ctx, c, d, bn, x, p, p + node.c, out[i], saved[i],
                                     saved[i] + node.c, rs, rs + node.c);
        } else {
          be.batchnorm_forward_eval(be.ctx, c, d, bn, x, p, p + node.c, rs, rs + node.c, out[i]);
        }
        break;
      }
      case OpKind::maxpool:
        be.maxpool_forward(be.ctx, c, pool_dims(model, node, n), x, out[i], argmax[i]);
        break;
      case OpKind::global_avgpool: {
        const Node& src = model.nodes[node.in0];
        be.global_avgpool_forward(be.ctx, n, src.c, int64_t(src.h) * src.w, x, out[i]);
        break;
      }
    }
    timer.end(timed);
  }
  timer.finish();
}

void Trainer::backward(int64_t n, std::vector<double>* node_ms) {
  require_training("backward");
  auto& cache = caches_for(n);
  // A node read by two consumers gets its gradient from both: the first writes it, the second
  // writes into scratch and adds. Nodes run in reverse, so "first" = the later consumer.
  std::vector<uint8_t>& written = grad_written;  // sized once: a step allocates nothing
  std::fill(written.begin(), written.end(), 0);
  auto target = [&](int node) -> float* {
    if (node == 0) return nullptr;  // the input needs no gradient
    return written[node] ? scratch : grad[node];
  };
  auto done = [&](int node) {
    if (node == 0) return;
    if (written[node])
      be.add(be.ctx, n * model.nodes[node].out_size(), grad[node], scratch, grad[node]);
    written[node] = 1;
  };

  PassTimer timer(*this, node_ms);
  for (int i = int(model.nodes.size()) - 1; i >= 1; --i) {
    const Node& node = model.nodes[i];
    // A node without parameters that reads only the data needs no backward at all.
    if (node.param_offset < 0 && node.in0 == 0 && node.in1 < 0) continue;
    timer.begin();
    OpCache& c = *cache[i];
    const float* dy = grad[i];
    const float* x = out[node.in0];
    float* p = node.param_offset >= 0 ? params + node.param_offset : nullptr;
    float* g = node.param_offset >= 0 ? grads + node.param_offset : nullptr;
    switch (node.kind) {
      case OpKind::input:
        break;
      case OpKind::dense: {
        const DenseDims d = dense_dims(model, node, n);
        be.dense_backward(be.ctx, c, d, x, p, dy, target(node.in0), g,
                          node.bias ? g + d.in * d.out : nullptr);
        done(node.in0);
        break;
      }
      case OpKind::relu:
        if (relu_fusion[node.in0] == ReluFusion::both)
          break;  // the fused BN's backward reads this node's output and gradient itself
        be.relu_backward(be.ctx, n * node.out_size(), out[i], dy, target(node.in0));
        done(node.in0);
        break;
      case OpKind::add:
        for (int in : {node.in0, node.in1}) {
          if (grad_of_add[in] != i) {  // a shared buffer already holds dy
            float* t = target(in);
            if (t) be.copy(be.ctx, t, dy, n * node.out_size() * sizeof(float));
          }
          done(in);
        }
        break;
      case OpKind::conv2d: {
        const ConvDims d = conv_dims(model, node, n);
        be.conv2d_backward_weights(be.ctx, c, d, x, dy, g);
        if (node.in0 != 0) {
          be.conv2d_backward_data(be.ctx, c, d, dy, p, target(node.in0));
          done(node.in0);
        }
        break;
      }
      case OpKind::batchnorm: {
        const BnDims d{n, node.c, int64_t(node.h) * node.w};
        if (relu_fusion[i] == ReluFusion::both)
          be.batchnorm_relu_backward(be.ctx, c, d, x, out[i + 1], grad[i + 1], p, saved[i],
                                     saved[i] + node.c, target(node.in0), g, g + node.c);
        else
          be.batchnorm_backward(be.ctx, c, d, x, dy, p, saved[i], saved[i] + node.c,
                                target(node.in0), g, g + node.c);
        done(node.in0);
        break;
      }
      case OpKind::maxpool:
        be.maxpool_backward(be.ctx, c, pool_dims(model, node, n), dy, argmax[i], target(node.in0));
        done(node.in0);
        break;
      case OpKind::global_avgpool: {
        const Node& src = model.nodes[node.in0];
        be.global_avgpool_backward(be.ctx, n, src.c, int64_t(src.h) * src.w, dy, target(node.in0));
        done(node.in0);
        break;
      }
    }
    timer.end(size_t(i));
  }
  timer.finish();
}

void Trainer::optimizer_update() {
  if (hp.optimizer == "sgd")
    be.sgd_update(be.ctx, model.param_count, params, grads, opt_m, hp.sgd);
  else
    be.adam_update(be.ctx, model.param_count, params, grads, opt_m, opt_v, hp.adam, cursor);
  be.advance_cursor(be.ctx, cursor);
}

void Trainer::loss(int64_t n) {
  const int last = int(model.nodes.size()) - 1;
  be.softmax_ce(be.ctx, n, model.classes, out[last], labels, 1.f / float(n), grad[last], metrics);
}

bool Trainer::replay_graph(Graphs& gs, int64_t n, const std::function<void()>& issue) {
  if (!be.graph_begin || !graph_failure.empty()) return false;
  auto it = gs.by_size.find(n);
  if (it == gs.by_size.end()) {
    if (!gs.issued_sizes.count(n)) return false;  // the first at a size builds caches: issued
    bool recording = false;
    auto end_recording = [&]() -> void* {  // also after a failure while recording
      recording = false;
      try {
        return be.graph_end(be.ctx);
      } catch (const Error& e) {
        if (graph_failure.empty()) graph_failure = e.what();
        return nullptr;
      }
    };
    try {
      be.graph_begin(be.ctx);
      recording = true;
      issue();
    } catch (const Error& e) {
      graph_failure = e.what();
    } catch (...) {  // not ours (bad_alloc): end the recording, then let it go on up
      if (recording)
        if (void* g = end_recording()) be.graph_destroy(be.ctx, g);
      throw;
    }
    void* g = recording ? end_recording() : nullptr;
    if (!graph_failure.empty()) {
      if (g) be.graph_destroy(be.ctx, g);
      return false;  // nothing ran while recording: the ops run as issued
    }
    it = gs.by_size.emplace(n, g).first;
  }
  be.graph_launch(be.ctx, it->second);
  gs.replays++;
  return true;
}

std::string Trainer::graph_summary() const {
  if (!be.graph_begin) return "off (the backend records no graphs)";
  // What replayed: "N steps from G graph(s), batch a, b" and "M test batches".
  std::string replayed;
  if (!step_graphs.by_size.empty()) {
    std::string sizes;
    for (const auto& [n, g] : step_graphs.by_size)
      sizes += (sizes.empty() ? "" : ", ") + std::to_string(n);
    replayed = std::to_string(step_graphs.replays) + " steps replayed from " +
               std::to_string(step_graphs.by_size.size()) + " graph(s), batch " + sizes;
  }
  if (eval_graphs.replays)
    replayed += (replayed.empty() ? "" : "; ") + std::string("test pass: ") +
                std::to_string(eval_graphs.replays) + " batches replayed";
  if (!graph_failure.empty())
    return (replayed.empty() ? "off" : "off after " + replayed) +
           " (recording failed: " + graph_failure + ")";
  return replayed.empty() ? "on, none recorded yet" : "on: " + replayed;
}

bool Trainer::fused_mlp_step(int64_t n) {
  if (!be.mlp_step || !mlp_fusable) return false;
  MlpStep s;
  s.batch = train_spec;
  s.batch.n = n, s.batch.cursor = cursor;
  s.images = train_images, s.labels = train_labels, s.indices = train_indices;
  s.in = model.nodes[0].out_size(), s.hidden = model.nodes[1].c, s.classes = model.nodes[3].c;
  s.params = params, s.grads = grads, s.m = opt_m, s.v = opt_v, s.adam = hp.adam;
  s.h = out[2], s.logits = out[3], s.dlogits = grad[3], s.dh = grad[1];
  s.y = labels, s.metrics = metrics;
  if (!be.mlp_step(be.ctx, s)) return false;
  fused_issues++;
  return true;
}

void Trainer::issue_step(int64_t n, StepSplit* split, std::vector<double>* forward_node_ms,
                         std::vector<double>* backward_node_ms) {
  require_training("issue_step");  // every step is issued before a graph replays it
  if (!split && fused_mlp_step(n)) {
    be.advance_cursor(be.ctx, cursor);
    return;
  }
  // The first op-by-op step at a size makes its ops' plans (cuBLASLt, cuDNN): not a sample. (With
  // a fused step, or at the last batch's size, a sampled step can be that first one.)
  if (op_by_op_sizes.insert(n).second || !split)
    split = nullptr, forward_node_ms = backward_node_ms = nullptr;
  // A sampled step times its parts: a synchronize after each, op by op.
  Clock::time_point t0;
  auto lap = [&](double StepSplit::*part) {
    if (!split) return;
    be.synchronize(be.ctx);
    split->*part += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    t0 = Clock::now();
  };
  if (split) be.synchronize(be.ctx), t0 = Clock::now();
  load_train_batch(n);
  lap(&StepSplit::data_ms);
  forward(n, true, forward_node_ms);
  lap(&StepSplit::forward_ms);
  loss(n);
  lap(&StepSplit::loss_ms);
  backward(n, backward_node_ms);
  lap(&StepSplit::backward_ms);
  optimizer_update();
  lap(&StepSplit::optimizer_ms);
  if (split) split->samples++;
}

void Trainer::run_graphed(Graphs& gs, int64_t n, const std::function<void()>& issue) {
  if (replay_graph(gs, n, issue)) return;
  if (be.graph_begin) gs.issued_sizes.insert(n);  // the next batch of this size may record
  issue();
}

void Trainer::step(int64_t n, StepSplit* split) {
  if (!split) return run_graphed(step_graphs, n, [&] { issue_step(n, nullptr); });
  if (be.graph_begin) step_graphs.issued_sizes.insert(n);  // a sampled step runs as issued
  issue_step(n, split);
}

void Trainer::issue_eval_batch(int64_t n) {
  BatchSpec s = test_spec;
  s.n = n, s.cursor = eval_cursor;
  be.gather_batch(be.ctx, s, test_images, test_labels, test_indices, out[0], labels);
  forward(n, false);
  const int last = int(model.nodes.size()) - 1;
  be.softmax_ce(be.ctx, n, model.classes, out[last], labels, 1.f, nullptr, metrics + 2);
  be.advance_cursor(be.ctx, eval_cursor);
}

EvalResult Trainer::evaluate() {
  EvalResult r;
  const auto t0 = Clock::now();
  be.fill(be.ctx, metrics + 2, 0.f, 2);
  StepCursor c;  // the test set in order, max_batch images a batch
  c.stride = max_batch, c.count = test_count;
  be.upload(be.ctx, eval_cursor, &c, sizeof(c));
  for (int64_t first = 0; first < test_count; first += max_batch) {
    const int64_t n = std::min(max_batch, test_count - first);
    run_graphed(eval_graphs, n, [&] { issue_eval_batch(n); });
  }
  float host[4];
  be.download(be.ctx, host, metrics, sizeof(host));
  r.seconds = seconds_since(t0);
  r.images = test_count;
  r.loss = host[2] / double(test_count);
  r.accuracy = host[3] / double(test_count);
  return r;
}

TrainResult Trainer::train(const std::function<void(const Progress&)>& on_progress,
                           const CheckpointPlan& checkpoints, const std::atomic<bool>* stop) {
  require_training("train");
  TrainResult r;
  std::mt19937_64 shuffle_rng(hp.seed ^ 0x5eedull);
  const int64_t steps_per_epoch = (train_count + hp.batch - 1) / hp.batch;
  int first_epoch = 1;
  EpochSoFar so_far;  // of first_epoch, where a checkpoint stopped inside it
  if (checkpoints.resume) {
    const Checkpoint& c = *checkpoints.resume;
    restore(c, checkpoints.resume_path);
    std::istringstream rng_state(c.shuffle_rng);
    TB_CHECK(bool(rng_state >> shuffle_rng), "checkpoint {}: corrupt (shuffle generator state)",
             checkpoints.resume_path);
    so_far = c.epoch_so_far;
    TB_CHECK(so_far.steps >= 0 && so_far.steps < steps_per_epoch &&
                 so_far.images == std::min(so_far.steps * hp.batch, train_count),
             "checkpoint {}: corrupt ({} steps and {} images into an epoch of {} steps)",
             checkpoints.resume_path, so_far.steps, so_far.images, steps_per_epoch);
    r.epochs = c.epochs, r.resumed_epochs = c.epochs_done, r.resumed_steps = so_far.steps;
    r.resumed_seconds = so_far.seconds;
    for (const EpochResult& e : c.epochs) r.resumed_seconds += e.seconds;
    first_epoch = c.epochs_done + 1;
  }
  int64_t planned = steps_per_epoch * (hp.epochs - first_epoch + 1) - so_far.steps;
  // --steps counts the whole run's steps, a checkpoint's included.
  const int64_t steps_before = steps_per_epoch * (first_epoch - 1) + so_far.steps;
  if (hp.steps >= 0 && hp.steps - steps_before < planned) {
    planned = hp.steps - steps_before, r.stopped_by_steps = true;
    TB_CHECK(planned > 0,
             "--steps {}: the checkpoint's {} epochs and {} steps ran {} steps already", hp.steps,
             first_epoch - 1, so_far.steps, steps_before);
  }
  // Steady state excludes the first 5% of steps (warm-up: caches, algorithm choice, clocks).
  const int64_t warm_steps = std::max<int64_t>(1, (planned * 5 + 99) / 100);
  // The step split is sampled on one step in every `period`, half a period after the host-overhead
  // sample; a short run (--steps 20) samples every planned/2 steps so it still gets both (never
  // step 0: it makes the primitives and times the convolutions' candidates). A long run takes
  // about 64 of each: a sampled step runs as issued, with synchronizes, and at fashion-mlp's
  // 18,750 GPU steps of a few tens of microseconds one every 64 steps would cost several percent.
  const int64_t period = std::clamp<int64_t>(planned / 2, 2, std::max<int64_t>(64, planned / 64));
  Clock::time_point t_warm{};
  int64_t images_at_warm = 0;

  std::vector<int32_t> perm(train_count);
  std::iota(perm.begin(), perm.end(), 0);
  be.synchronize(be.ctx);
  const auto t_train = Clock::now();
  double paused_after_warm_s = 0;  // checkpoint writes after the warm-up mark
  auto last_checkpoint = Clock::now();
  const bool periodic = checkpoints.write && checkpoints.every_s > 0;  // --checkpoint-every
  auto rng_text = [&] {
    std::ostringstream state;
    state << shuffle_rng;
    return state.str();
  };
  // Writes a checkpoint; returns the seconds it took (in no training time).
  auto save = [&](const std::string& rng_state, const EpochSoFar& part) {
    const auto t0 = Clock::now();
    const bool written = checkpoints.write(checkpoint(r, rng_state, part));
    last_checkpoint = Clock::now();
    const double s = seconds_since(t0);
    r.checkpoints += written, r.checkpoint_seconds += s;
    if (r.steps >= warm_steps) paused_after_warm_s += s;
    return s;
  };

  for (int epoch = first_epoch; epoch <= hp.epochs && r.steps < planned && !r.interrupted;
       ++epoch) {
    // The permutation is the epoch's whatever the epochs before it ran in this process or in
    // the run a checkpoint came from: it restarts from the identity and the generator's state.
    // For a checkpoint inside this epoch: the resumed run shuffles it again.
    const std::string rng_at_start = checkpoints.write ? rng_text() : std::string();
    std::iota(perm.begin(), perm.end(), 0);
    const auto t_epoch = Clock::now();
    std::shuffle(perm.begin(), perm.end(), shuffle_rng);
    be.upload(be.ctx, train_indices, perm.data(), perm.size() * sizeof(int32_t));
    // A checkpoint cut inside this epoch: on from its step, its sums and time.
    const EpochSoFar before = epoch == first_epoch ? so_far : EpochSoFar{};
    start_epoch(epoch, before.steps);
    const float sums[2] = {before.loss_sum, before.correct};  // zeros for a fresh epoch
    be.upload(be.ctx, metrics, sums, sizeof(sums));
    EpochResult e;
    e.steps = before.steps, e.images = before.images;
    double paused_in_epoch = 0;  // its checkpoints' time: not the epoch's
    auto epoch_seconds = [&] { return before.seconds + seconds_since(t_epoch) - paused_in_epoch; };
    // A checkpoint of the epoch as it stands: its seconds so far, the device's loss and correct
    // sums.
    auto save_inside = [&](double seconds, const float* sums_now) {
      paused_in_epoch += save(rng_at_start, {e.steps, e.images, seconds, sums_now[0], sums_now[1]});
    };
    auto last_report = Clock::now();
    auto report = [&](bool epoch_done) {
      if (!on_progress) return;
      float host[4];
      be.download(be.ctx, host, metrics, sizeof(host));
      Progress p;
      p.epoch = epoch, p.epochs = hp.epochs, p.step = e.steps;
      p.steps = std::min(steps_per_epoch, planned - (r.steps - e.steps));
      p.elapsed_s = epoch_seconds();
      p.loss = e.images ? host[0] / double(e.images) : 0;
      p.accuracy = e.images ? host[1] / double(e.images) : 0;
      p.epoch_done = epoch_done;
      on_progress(p);
      last_report = Clock::now();
    };
    for (int64_t s = before.steps; s < steps_per_epoch && r.steps < planned; ++s) {
      if (stop && stop->load(std::memory_order_relaxed)) {
        r.interrupted = true;
        break;
      }
      const int64_t n = std::min<int64_t>(hp.batch, train_count - s * hp.batch);
      if (r.steps % period == 0 && r.steps > 0) {
        // Host overhead: issue the step without synchronizing, then wait for the device.
        be.synchronize(be.ctx);
        const auto t0 = Clock::now();
        step(n, nullptr);
        const auto t_issued = Clock::now();
        be.synchronize(be.ctx);
        r.split.host_ms += std::chrono::duration<double, std::milli>(t_issued - t0).count();
        r.split.whole_ms += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        r.split.host_samples++;
      } else {
        step(n, (r.steps % period == period / 2) ? &r.split : nullptr);
      }
      e.steps++, e.images += n, r.steps++, r.images += n;
      if (r.steps == warm_steps) {
        be.synchronize(be.ctx);
        t_warm = Clock::now(), images_at_warm = r.images;
      }
      if (on_progress && seconds_since(last_report) > 0.1) report(false);
      if (periodic && e.steps < steps_per_epoch &&
          seconds_since(last_checkpoint) >= checkpoints.every_s) {
        float sums_now[2];
        be.download(be.ctx, sums_now, metrics, sizeof(sums_now));  // synchronizes: the step's time
        save_inside(epoch_seconds(), sums_now);
      }
    }
    if (e.steps == before.steps) break;  // stopped before this run's first step of the epoch
    float host[4];
    be.download(be.ctx, host, metrics, sizeof(host));  // synchronizes
    e.seconds = epoch_seconds();
    // Stopped inside the epoch (Ctrl-C, --steps): the checkpoint holds it as it stands.
    if (checkpoints.write && e.steps < steps_per_epoch) save_inside(e.seconds, host);
    e.loss = host[0] / double(e.images);
    e.accuracy = host[1] / double(e.images);
    r.epochs.push_back(e);
    report(true);
    // The generator's state after this shuffle is the next epoch's before its own.
    if (checkpoints.write && e.steps == steps_per_epoch) save(rng_text(), {});
  }
  be.synchronize(be.ctx);
  const auto t_end = Clock::now();
  r.train_seconds = std::chrono::duration<double>(t_end - t_train).count() - r.checkpoint_seconds;
  r.images_per_s = r.images / r.train_seconds;
  const double steady_s =
      std::chrono::duration<double>(t_end - t_warm).count() - paused_after_warm_s;
  r.images_per_s_steady = (r.steps > warm_steps && steady_s > 0)
                              ? (r.images - images_at_warm) / steady_s
                              : r.images_per_s;
  if (r.split.samples) {
    const double k = 1.0 / r.split.samples;
    r.split.data_ms *= k, r.split.forward_ms *= k, r.split.loss_ms *= k, r.split.backward_ms *= k,
        r.split.optimizer_ms *= k;
  }
  if (r.split.host_samples) {
    r.split.host_ms /= r.split.host_samples;
    r.split.whole_ms /= r.split.host_samples;
  }
  return r;
}

// The device arrays a checkpoint holds, each with its host copy in c (const or not) and length.
template <class C>
static auto checkpoint_arrays(const Trainer& t, C& c) {
  struct Array {
    decltype(&c.params) host;
    float* device;
    int64_t count;
  };
  const int64_t P = t.model.param_count;
  return std::array<Array, 4>{{{&c.params, t.params, P},
                               {&c.opt_m, t.opt_m, P},
                               {&c.opt_v, t.opt_v, P},
                               {&c.state, t.state, t.model.state_count}}};
}

Checkpoint Trainer::checkpoint(const TrainResult& r, const std::string& shuffle_rng,
                               const EpochSoFar& so_far) const {
  require_training("checkpoint");
  Checkpoint c;
  c.workload = hp.workload;
  c.param_count = model.param_count, c.state_count = model.state_count;
  c.train_count = train_count;
  c.hyper = hyper_json(hp);
  c.device = be.name;
  c.epochs_done = int(r.epochs.size());
  c.shuffle_rng = shuffle_rng;
  c.epochs = r.epochs;
  c.epoch_so_far = so_far;
  for (auto [host, device, count] : checkpoint_arrays(*this, c)) {
    host->resize(size_t(count));
    if (count) be.download(be.ctx, host->data(), device, size_t(count) * sizeof(float));
  }
  be.download(be.ctx, &c.updates, &cursor->updates, sizeof(c.updates));
  return c;
}

static void check_model_fits(const Checkpoint& c, const std::string& path, const Model& model,
                             const Hyper& hp) {
  TB_CHECK(c.workload == hp.workload, "checkpoint {} is of workload {}, not {}", path, c.workload,
           hp.workload);
  TB_CHECK(c.param_count == model.param_count && c.state_count == model.state_count,
           "checkpoint {} holds a model of {} parameters and {} statistics; this one has {} and {}",
           path, c.param_count, c.state_count, model.param_count, model.state_count);
}

void Trainer::restore(const Checkpoint& c, const std::string& path) {
  require_training("restore");
  check_resumable(c, path, hp);
  check_model_fits(c, path, model, hp);
  TB_CHECK(c.train_count == train_count,
           "checkpoint {} was trained on {} images; this data set has {} (resume on the same)",
           path, c.train_count, train_count);
  for (auto [host, device, count] : checkpoint_arrays(*this, c))
    if (count) be.upload(be.ctx, device, host->data(), size_t(count) * sizeof(float));
  be.upload(be.ctx, &cursor->updates, &c.updates, sizeof(c.updates));
  be.synchronize(be.ctx);
}

void Trainer::load_model(const Checkpoint& c, const std::string& path) {
  check_model_fits(c, path, model, hp);
  const auto arrays = checkpoint_arrays(*this, c);
  for (const auto& [host, device, count] : {arrays[0], arrays[3]})  // parameters, BN statistics
    if (count) be.upload(be.ctx, device, host->data(), size_t(count) * sizeof(float));
  be.synchronize(be.ctx);
}

std::vector<float> Trainer::download_params() const {
  std::vector<float> p(model.param_count);
  be.download(be.ctx, p.data(), params, p.size() * sizeof(float));
  return p;
}

void Trainer::upload_params(const std::vector<float>& p) {
  TB_CHECK(int64_t(p.size()) == model.param_count, "parameter count mismatch: {} vs {}", p.size(),
           model.param_count);
  be.upload(be.ctx, params, p.data(), p.size() * sizeof(float));
}

}  // namespace tb
