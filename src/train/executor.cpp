#include "train/executor.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "comm/comm.h"
#include "core/error.h"
#include "core/memory.h"
#include "train/init.h"

namespace tb {

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Setup: the plan, the arena carved into buffers, the data set uploaded.

Executor::Executor(const Model& m, Backend& b, const Hyper& h, const Workload& w,
                   const DatasetPair& data, ExecutorUse u, const DataParallel& dp)
    : model_(m), be_(b), dp_(dp), hp_(h), workload_(w), use_(u) {
  TB_CHECK(hp_.batch > 0, "--batch must be positive");
  if (dp_.comm) rank_ = dp_.comm->rank(), ranks_ = dp_.comm->size();
  TB_CHECK(ranks_ == 1 || hp_.batch >= ranks_,
           "--batch {} is the global batch: at least one image "
           "for each of the {} ranks",
           hp_.batch, ranks_);
  TB_CHECK(data.train.count > 0 && data.test.count > 0, "empty data set");
  TB_CHECK(data.train.image_size() == m.nodes[0].out_size(),
           "data images are {}x{}x{}, the model expects {}x{}x{}", data.train.channels,
           data.train.height, data.train.width, m.nodes[0].c, m.nodes[0].h, m.nodes[0].w);
  train_count_ = data.train.count, test_count_ = data.test.count;
  max_batch_ =
      std::min<int64_t>(hp_.batch, trains() ? std::max(train_count_, test_count_) : test_count_);
  // The fused MLP step updates the weights itself: no point between backward and the optimizer
  // for other ranks' gradients.
  plan_ = compile_plan(m, plan_caps(be_), trains(),
                       hp_.optimizer != "sgd" && !hp_.augment && ranks_ == 1);
  if (trains()) plan_buckets();

  // The arena, then the data set (uint8, as read), in one try: on running out of memory,
  // everything taken so far goes back and the error says which batch would fit.
  const ArenaShape shape{max_batch_, trains(), train_count_, test_count_};
  layout_ = layout_arena(m, plan_, shape);
  const std::vector<uint8_t>* sets[4] = {&data.test.images, &data.test.labels, &data.train.images,
                                         &data.train.labels};
  uint8_t** set_ptrs[4] = {&buf_.test_images, &buf_.test_labels, &buf_.train_images,
                           &buf_.train_labels};
  const int uploads = trains() ? 4 : 2;
  size_t data_bytes = 0;
  for (int k = 0; k < uploads; ++k) data_bytes += align_up(sets[k]->size());
  size_t taken = 0;
  try {
    arena_ = be_.alloc(be_.ctx, layout_.total);
    taken += layout_.total;
    for (int k = 0; k < uploads; ++k) {
      *set_ptrs[k] = static_cast<uint8_t*>(be_.alloc(be_.ctx, sets[k]->size()));
      taken += align_up(sets[k]->size());
    }
  } catch (const OutOfMemory& e) {
    free_buffers();
    throw restate_out_of_memory(e, be_.name, m, plan_, shape, taken, data_bytes);
  }
  for (int k = 0; k < uploads; ++k)
    be_.upload(be_.ctx, *set_ptrs[k], sets[k]->data(), sets[k]->size());

  char* base = static_cast<char*>(arena_);
  auto at = [base](size_t off) -> void* { return off == kNoBuffer ? nullptr : base + off; };
  auto F = [&](size_t off) { return static_cast<float*>(at(off)); };
  auto I = [&](size_t off) { return static_cast<int32_t*>(at(off)); };
  const ArenaLayout& L = layout_;
  buf_.params = F(L.params), buf_.grads = F(L.grads), buf_.opt_m = F(L.m), buf_.opt_v = F(L.v);
  buf_.state = F(L.state);
  const size_t nodes = m.nodes.size();
  buf_.out.resize(nodes), buf_.grad.resize(nodes), buf_.saved.resize(nodes);
  buf_.argmax.resize(nodes);
  for (size_t i = 0; i < nodes; ++i) {
    buf_.out[i] = F(L.out[i]), buf_.grad[i] = F(L.grad[i]);
    buf_.saved[i] = F(L.saved[i]), buf_.argmax[i] = I(L.argmax[i]);
  }
  buf_.scratch = F(L.scratch), buf_.labels = I(L.labels), buf_.metrics = F(L.metrics);
  buf_.cursor = static_cast<StepCursor*>(at(L.cursor));
  buf_.eval_cursor = static_cast<StepCursor*>(at(L.eval_cursor));
  buf_.train_indices = I(L.train_idx), buf_.test_indices = I(L.test_idx);

  try {
    fill_initial_state(data);
  } catch (...) {
    free_buffers();  // the destructor does not run for a constructor that throws
    throw;
  }
}

void Executor::fill_initial_state(const DatasetPair& data) {
  const int64_t P = model_.param_count;
  const size_t f = sizeof(float);
  // Parameters start on the host from the seed, then go up once.
  {
    auto host_params = host_alloc<float>(P), host_state = host_alloc<float>(model_.state_count + 1);
    init_parameters(model_, hp_.seed, host_params.get(), host_state.get());
    be_.upload(be_.ctx, buf_.params, host_params.get(), P * f);
    if (model_.state_count)
      be_.upload(be_.ctx, buf_.state, host_state.get(), model_.state_count * f);
    if (be_.set_param_array) be_.set_param_array(be_.ctx, buf_.params, P);
  }
  {
    std::vector<int32_t> iota(test_count_);
    std::iota(iota.begin(), iota.end(), 0);
    be_.upload(be_.ctx, buf_.test_indices, iota.data(), test_count_ * sizeof(int32_t));
    // Until the runner shuffles: the training set in order (tests step without epochs).
    iota.resize(train_count_);
    std::iota(iota.begin(), iota.end(), 0);
    if (buf_.train_indices)
      be_.upload(be_.ctx, buf_.train_indices, iota.data(), train_count_ * sizeof(int32_t));
  }
  StepCursor c;
  c.stride = hp_.batch, c.count = train_count_, c.epoch = 1, c.seed = hp_.seed;
  c.rank = rank_, c.ranks = ranks_;
  be_.upload(be_.ctx, buf_.cursor, &c, sizeof(c));

  BatchSpec spec;
  spec.channels = data.train.channels, spec.height = data.train.height,
  spec.width = data.train.width;
  spec.layout = plan_.layout;
  for (int k = 0; k < std::min(spec.channels, 3); ++k)
    spec.mean[k] = workload_.mean[k], spec.inv_std[k] = 1.f / workload_.std[k];
  train_spec_ = test_spec_ = spec;
  train_spec_.augment = hp_.augment;
  be_.synchronize(be_.ctx);
}

void Executor::free_buffers() {
  if (be_.set_param_array && arena_) be_.set_param_array(be_.ctx, buf_.params, 0);
  for (void** p :
       {reinterpret_cast<void**>(&buf_.train_images), reinterpret_cast<void**>(&buf_.train_labels),
        reinterpret_cast<void**>(&buf_.test_images), reinterpret_cast<void**>(&buf_.test_labels),
        &arena_}) {
    if (*p) be_.free(be_.ctx, *p);
    *p = nullptr;
  }
}

Executor::~Executor() {
  if (node_timers_) be_.timers_destroy(be_.ctx, node_timers_);
  for (Graphs* gs : {&step_graphs_, &eval_graphs_})  // they point into the caches
    for (auto& [n, g] : gs->by_size) be_.graph_destroy(be_.ctx, g);
  caches_.clear();  // backend state first, while the backend lives
  free_buffers();
}

void Executor::require_training(const char* what) const {
  TB_CHECK(trains(), "Executor::{}: this executor was made for test passes only", what);
}

std::vector<std::unique_ptr<OpCache>>& Executor::caches_for(int64_t n) {
  auto& v = caches_[n];
  if (v.empty())
    for (size_t i = 0; i < model_.nodes.size(); ++i) v.push_back(std::make_unique<OpCache>());
  return v;
}

const std::vector<std::unique_ptr<OpCache>>& Executor::training_caches() const {
  static const std::vector<std::unique_ptr<OpCache>> none;
  const auto it = caches_.find(shard(std::min<int64_t>(hp_.batch, train_count_)));
  return it == caches_.end() ? none : it->second;
}

std::vector<std::string> Executor::node_notes() const {
  std::vector<std::string> notes(model_.nodes.size());
  const auto& c = training_caches();
  for (size_t i = 0; i < c.size(); ++i) notes[i] = c[i]->note;
  return notes;
}

std::vector<std::optional<Precision>> Executor::node_precisions() const {
  std::vector<std::optional<Precision>> p(model_.nodes.size());
  const auto& c = training_caches();
  for (size_t i = 0; i < c.size(); ++i) p[i] = c[i]->precision;
  return p;
}

// ---------------------------------------------------------------------------------------------
// Timing a pass: where the backend has device timers, a mark goes before and after each plan step
// in stream order, behind the backend's gate, and all are read once at the end of the pass;
// elsewhere each step is timed with the host clock between synchronizes. Each step's time goes
// to its node. Nothing happens without `ms` (the untimed steps of training).

struct Executor::PassTimer {
  Executor& ex;
  std::vector<double>* ms;
  bool device;
  Clock::time_point t0;
  PassTimer(Executor& e, std::vector<double>* node_ms)
      : ex(e), ms(node_ms), device(node_ms && e.be_.timers_create) {
    if (!device) return;
    Backend& be = ex.be_;
    if (!ex.node_timers_)
      ex.node_timers_ = be.timers_create(be.ctx, 1 + 2 * int(ex.model_.nodes.size()));
    ex.marked_nodes_.clear();
    be.timers_start(be.ctx, ex.node_timers_);
    be.timer_mark(be.ctx, ex.node_timers_, 0);
  }
  void begin() {
    if (!ms) return;
    Backend& be = ex.be_;
    if (device) {
      be.timer_mark(be.ctx, ex.node_timers_, 1 + 2 * int(ex.marked_nodes_.size()));
    } else {
      be.synchronize(be.ctx);
      t0 = Clock::now();
    }
  }
  void end(int node) {
    if (!ms) return;
    Backend& be = ex.be_;
    if (device) {
      be.timer_mark(be.ctx, ex.node_timers_, 2 + 2 * int(ex.marked_nodes_.size()));
      ex.marked_nodes_.push_back(node);
    } else {
      be.synchronize(be.ctx);
      (*ms)[size_t(node)] += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    }
  }
  void finish() {
    if (!device) return;
    const size_t marked = ex.marked_nodes_.size();
    std::vector<float> read(1 + 2 * marked);  // profiling only: a training step allocates nothing
    if (!ex.be_.timers_read(ex.be_.ctx, ex.node_timers_, int(read.size()), read.data()))
      ex.host_paced_passes_++;
    for (size_t k = 0; k < marked; ++k)
      (*ms)[size_t(ex.marked_nodes_[k])] += double(read[2 + 2 * k]) - double(read[1 + 2 * k]);
  }
};

// ---------------------------------------------------------------------------------------------
// The step

void Executor::load_batch(const BatchSpec& base, const uint8_t* images, const uint8_t* lbls,
                          const int32_t* indices, int64_t n, uint64_t seed) {
  BatchSpec s = base;
  s.n = n, s.seed = seed;
  be_.gather_batch(be_.ctx, s, images, lbls, indices, buf_.out[0], buf_.labels);
}

void Executor::load_train_batch(int64_t n) {
  BatchSpec s = train_spec_;
  s.n = n, s.cursor = buf_.cursor;
  be_.gather_batch(be_.ctx, s, buf_.train_images, buf_.train_labels, buf_.train_indices,
                   buf_.out[0], buf_.labels);
}

void Executor::forward(int64_t n, bool training, NodeTimes* times) {
  auto& cache = caches_for(n);
  PassTimer timer(*this, times ? &times->forward_ms : nullptr);
  for (const ForwardStep& s : plan_.forward) {
    timer.begin();
    issue_forward_step(s, n, training, cache);
    timer.end(s.node);
  }
  timer.finish();
}

void Executor::loss(int64_t n, int64_t step_n) {
  const size_t last = model_.nodes.size() - 1;
  be_.softmax_ce(be_.ctx, n, model_.classes, buf_.out[last], buf_.labels,
                 1.f / float(step_n > 0 ? step_n : n), buf_.grad[last], buf_.metrics);
}

void Executor::backward(int64_t n, NodeTimes* times) {
  require_training("backward");
  if (n == 0) {  // a rank with no image in the last batch: its gradients count zero
    be_.fill(be_.ctx, buf_.grads, 0.f, model_.param_count);
    if (ranks_ > 1)  // the same buckets as the other ranks start, or the sums would not pair
      for (int64_t ready : ready_from_) start_buckets(ready, false);
    return;
  }
  auto& cache = caches_for(n);
  PassTimer timer(*this, times ? &times->backward_ms : nullptr);
  for (size_t k = 0; k < plan_.backward.size(); ++k) {
    const BackwardStep& s = plan_.backward[k];
    timer.begin();
    issue_backward_step(s, n, cache);
    timer.end(s.node);
    if (ranks_ > 1) start_buckets(ready_from_[k], false);
  }
  timer.finish();
}

// ---------------------------------------------------------------------------------------------
// Gradients over ranks. Backward runs the nodes last to first and the parameters lie in node
// order, so the finished gradients grow from the end of the array towards its start: each
// bucket is the next contiguous range below the ones started, once it holds bucket_bytes.

int64_t Executor::shard(int64_t n) const {
  return shard_count(n, rank_, ranks_);
}

void Executor::plan_buckets() {
  const int64_t P = model_.param_count;
  std::vector<int> owners;  // nodes with parameters, by offset, last first
  for (size_t i = 0; i < model_.nodes.size(); ++i)
    if (model_.nodes[i].param_count > 0) owners.push_back(int(i));
  std::sort(owners.begin(), owners.end(), [&](int a, int b) {
    return model_.nodes[size_t(a)].param_offset > model_.nodes[size_t(b)].param_offset;
  });
  std::vector<uint8_t> done(model_.nodes.size(), 0);
  ready_from_.clear();
  for (const BackwardStep& s : plan_.backward) {
    done[size_t(s.node)] = 1;
    int64_t ready = P;
    for (int i : owners) {
      if (!done[size_t(i)]) break;
      ready = model_.nodes[size_t(i)].param_offset;
    }
    ready_from_.push_back(ready);
  }
  started_from_ = P;
}

void Executor::start_buckets(int64_t ready_from, bool all) {
  Comm& comm = *dp_.comm;
  const int64_t bucket = dp_.bucket_bytes / int64_t(sizeof(float));
  if (all) ready_from = 0;
  const int64_t ready = started_from_ - ready_from;
  if (ready > 0 && (all || (bucket > 0 && ready >= bucket))) {
    // The backend's writes must be done before MPI reads the memory (the CPU's already are).
    be_.synchronize(be_.ctx);
    if (pending_.empty()) first_bucket_at_ = Clock::now();
    pending_.push_back(comm.start_sum(buf_.grads + ready_from, ready));
    started_from_ = ready_from;
    exchange_.buckets++;
  }
  for (int r : pending_) comm.test(r);  // MPI moves a started sum on only inside its calls
}

void Executor::exchange_gradients() {
  if (ranks_ == 1) return;
  const auto t0 = Clock::now();
  start_buckets(0, true);
  for (int r : pending_) dp_.comm->wait(r);
  const auto t1 = Clock::now();
  exchange_.exposed_ms += std::chrono::duration<double, std::milli>(t1 - t0).count();
  exchange_.span_ms += std::chrono::duration<double, std::milli>(t1 - first_bucket_at_).count();
  exchange_.steps++;
  pending_.clear();
  started_from_ = model_.param_count;
}

void Executor::optimizer_update() {
  const int64_t P = model_.param_count;
  if (hp_.optimizer == "sgd")
    be_.sgd_update(be_.ctx, P, buf_.params, buf_.grads, buf_.opt_m, hp_.sgd);
  else
    be_.adam_update(be_.ctx, P, buf_.params, buf_.grads, buf_.opt_m, buf_.opt_v, hp_.adam,
                    buf_.cursor);
  be_.advance_cursor(be_.ctx, buf_.cursor);
}

void Executor::issue_step(int64_t n, StepSplit* split, NodeTimes* times) {
  require_training("issue_step");  // every step is issued before a graph replays it
  if (!times && fused_mlp_step(n)) {
    be_.advance_cursor(be_.ctx, buf_.cursor);
    return;
  }
  // The first op-by-op step at a size makes its ops' plans (cuBLASLt, cuDNN): not a sample. (With
  // a fused step, or at the last batch's size, a sampled step can be that first one.)
  if (op_by_op_sizes_.insert(n).second || !split) split = nullptr, times = nullptr;
  // A sampled step times its parts: a synchronize after each.
  Clock::time_point t0;
  auto lap = [&](double StepSplit::*part) {
    if (!split) return;
    be_.synchronize(be_.ctx);
    split->*part += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    t0 = Clock::now();
  };
  if (split) be_.synchronize(be_.ctx), t0 = Clock::now();
  const int64_t m = shard(n);  // this rank's images (all of them on one rank)
  if (m > 0) {
    load_train_batch(m);
    lap(&StepSplit::data_ms);
    forward(m, true, times);
    lap(&StepSplit::forward_ms);
    loss(m, n);
    lap(&StepSplit::loss_ms);
  }
  backward(m, times);
  lap(&StepSplit::backward_ms);
  exchange_gradients();
  lap(&StepSplit::exchange_ms);
  optimizer_update();
  lap(&StepSplit::optimizer_ms);
  if (split) split->samples++;
}

bool Executor::fused_mlp_step(int64_t n) {
  if (!plan_.mlp.fits) return false;
  MlpStep s;
  s.batch = train_spec_;
  s.batch.n = n, s.batch.cursor = buf_.cursor;
  s.images = buf_.train_images, s.labels = buf_.train_labels, s.indices = buf_.train_indices;
  s.in = plan_.mlp.in, s.hidden = plan_.mlp.hidden, s.classes = plan_.mlp.classes;
  s.params = buf_.params, s.grads = buf_.grads, s.m = buf_.opt_m, s.v = buf_.opt_v;
  s.adam = hp_.adam;
  s.h = buf_.out[2], s.logits = buf_.out[3], s.dlogits = buf_.grad[3], s.dh = buf_.grad[1];
  s.y = buf_.labels, s.metrics = buf_.metrics;
  if (!be_.mlp_step(be_.ctx, s)) return false;
  fused_issues_++;
  return true;
}

void Executor::step(int64_t n, StepSplit* split) {
  if (ranks_ > 1) return issue_step(n, split);  // a graph cannot hold the exchange's MPI calls
  if (!split) return run_graphed(step_graphs_, n, [&] { issue_step(n, nullptr); });
  if (be_.graph_begin) step_graphs_.issued_sizes.insert(n);  // a sampled step runs as issued
  issue_step(n, split);
}

// ---------------------------------------------------------------------------------------------
// Epochs and the test pass

void Executor::begin_epoch(int64_t epoch, const std::vector<int32_t>& order, int64_t step,
                           float loss_sum, float correct) {
  require_training("begin_epoch");
  TB_CHECK(int64_t(order.size()) == train_count_, "begin_epoch: an order of {} for {} images",
           order.size(), train_count_);
  be_.upload(be_.ctx, buf_.train_indices, order.data(), order.size() * sizeof(int32_t));
  start_epoch(epoch, step);
  const float sums[2] = {loss_sum, correct};
  be_.upload(be_.ctx, buf_.metrics, sums, sizeof(sums));
}

void Executor::start_epoch(int64_t epoch, int64_t step) {
  // Two fields, not the whole cursor: the device counts the optimizer's updates.
  be_.upload(be_.ctx, &buf_.cursor->step, &step, sizeof(step));
  be_.upload(be_.ctx, &buf_.cursor->epoch, &epoch, sizeof(epoch));
}

std::array<float, 2> Executor::train_sums() const {
  std::array<float, 2> sums;
  be_.download(be_.ctx, sums.data(), buf_.metrics, sizeof(sums));  // synchronizes
  return sums;
}

void Executor::synchronize() const {
  be_.synchronize(be_.ctx);
}

void Executor::test_batch(int64_t n) {
  BatchSpec s = test_spec_;
  s.n = n, s.cursor = buf_.eval_cursor;
  be_.gather_batch(be_.ctx, s, buf_.test_images, buf_.test_labels, buf_.test_indices, buf_.out[0],
                   buf_.labels);
  forward(n, false);
  const size_t last = model_.nodes.size() - 1;
  be_.softmax_ce(be_.ctx, n, model_.classes, buf_.out[last], buf_.labels, 1.f, nullptr,
                 buf_.metrics + 2);
  be_.advance_cursor(be_.ctx, buf_.eval_cursor);
}

void Executor::start_test_pass() {
  be_.fill(be_.ctx, buf_.metrics + 2, 0.f, 2);
  StepCursor c;  // the test set in order, max_batch images a batch
  c.stride = max_batch_, c.count = test_count_;
  be_.upload(be_.ctx, buf_.eval_cursor, &c, sizeof(c));
}

EvalResult Executor::evaluate() {
  EvalResult r;
  const auto t0 = Clock::now();
  start_test_pass();
  for (int64_t first = 0; first < test_count_; first += max_batch_) {
    const int64_t n = std::min(max_batch_, test_count_ - first);
    run_graphed(eval_graphs_, n, [&] { test_batch(n); });
  }
  float host[4];
  be_.download(be_.ctx, host, buf_.metrics, sizeof(host));
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.images = test_count_;
  r.loss = host[2] / double(test_count_);
  r.accuracy = host[3] / double(test_count_);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Graphs

bool Executor::replay_graph(Graphs& gs, int64_t n, const std::function<void()>& issue) {
  if (!be_.graph_begin || !graph_failure_.empty()) return false;
  auto it = gs.by_size.find(n);
  if (it == gs.by_size.end()) {
    if (!gs.issued_sizes.count(n)) return false;  // the first at a size builds caches: issued
    bool recording = false;
    auto end_recording = [&]() -> void* {  // also after a failure while recording
      recording = false;
      try {
        return be_.graph_end(be_.ctx);
      } catch (const Error& e) {
        if (graph_failure_.empty()) graph_failure_ = e.what();
        return nullptr;
      }
    };
    try {
      be_.graph_begin(be_.ctx);
      recording = true;
      issue();
    } catch (const Error& e) {
      graph_failure_ = e.what();
    } catch (...) {  // not ours (bad_alloc): end the recording, then let it go on up
      if (recording)
        if (void* g = end_recording()) be_.graph_destroy(be_.ctx, g);
      throw;
    }
    void* g = recording ? end_recording() : nullptr;
    if (!graph_failure_.empty()) {
      if (g) be_.graph_destroy(be_.ctx, g);
      return false;  // nothing ran while recording: the ops run as issued
    }
    it = gs.by_size.emplace(n, g).first;
  }
  be_.graph_launch(be_.ctx, it->second);
  gs.replays++;
  return true;
}

void Executor::run_graphed(Graphs& gs, int64_t n, const std::function<void()>& issue) {
  if (replay_graph(gs, n, issue)) return;
  if (be_.graph_begin) gs.issued_sizes.insert(n);  // the next batch of this size may record
  issue();
}

std::string Executor::graph_summary() const {
  if (!be_.graph_begin) return "off (the backend records no graphs)";
  // What replayed: "N steps from G graph(s), batch a, b" and "M test batches".
  std::string replayed;
  if (!step_graphs_.by_size.empty()) {
    std::string sizes;
    for (const auto& [n, g] : step_graphs_.by_size)
      sizes += (sizes.empty() ? "" : ", ") + std::to_string(n);
    replayed = std::to_string(step_graphs_.replays) + " steps replayed from " +
               std::to_string(step_graphs_.by_size.size()) + " graph(s), batch " + sizes;
  }
  if (eval_graphs_.replays)
    replayed += (replayed.empty() ? "" : "; ") + std::string("test pass: ") +
                std::to_string(eval_graphs_.replays) + " batches replayed";
  if (!graph_failure_.empty())
    return (replayed.empty() ? "off" : "off after " + replayed) +
           " (recording failed: " + graph_failure_ + ")";
  return replayed.empty() ? "on, none recorded yet" : "on: " + replayed;
}

// ---------------------------------------------------------------------------------------------
// Parameters

void Executor::broadcast_state() {
  if (ranks_ == 1) return;
  const DeviceBuffers& b = buf_;
  const int64_t P = model_.param_count;
  std::vector<float> host;
  for (auto [device, count] : {std::pair{b.params, P}, std::pair{b.opt_m, P}, std::pair{b.opt_v, P},
                               std::pair{b.state, model_.state_count}}) {
    if (!count || !device) continue;
    host.resize(size_t(count));
    be_.download(be_.ctx, host.data(), device, host.size() * sizeof(float));
    dp_.comm->broadcast(host.data(), host.size() * sizeof(float));
    be_.upload(be_.ctx, device, host.data(), host.size() * sizeof(float));
  }
  int64_t updates = 0;
  be_.download(be_.ctx, &updates, &b.cursor->updates, sizeof(updates));
  dp_.comm->broadcast(&updates, sizeof(updates));
  be_.upload(be_.ctx, &b.cursor->updates, &updates, sizeof(updates));
  be_.synchronize(be_.ctx);
}

std::vector<float> Executor::download_params() const {
  std::vector<float> p(model_.param_count);
  be_.download(be_.ctx, p.data(), buf_.params, p.size() * sizeof(float));
  return p;
}

void Executor::upload_params(const std::vector<float>& p) {
  TB_CHECK(int64_t(p.size()) == model_.param_count, "parameter count mismatch: {} vs {}", p.size(),
           model_.param_count);
  be_.upload(be_.ctx, buf_.params, p.data(), p.size() * sizeof(float));
}

}  // namespace tb
