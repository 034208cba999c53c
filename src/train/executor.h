// The executor: issues the plan's steps on a backend. It owns every buffer of one run (carved
// out of one arena), the data set on the device (uploaded once as uint8), the backend's per-node
// caches, the recorded step graphs and the device timers. One training step, in order:
//
//   data cut -> forward steps -> loss -> backward steps -> gradient exchange -> optimizer -> cursor
//
// written once, in issue_step(). What changes between steps (batch offset, augmentation seed,
// Adam's step count) the ops read from the StepCursor on the device, so a recorded step replays.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "data/dataset.h"
#include "models/model.h"
#include "train/arena.h"
#include "train/plan.h"
#include "train/workload.h"

namespace tb {

class Comm;

// Data-parallel ranks: the communicator (null: one process) and the size of the gradient buckets
// handed to it as backward finishes them (0: one allreduce of all gradients after backward).
struct DataParallel {
  Comm* comm = nullptr;
  int64_t bucket_bytes = 0;
};

// The gradient exchange over the steps so far (totals; the record divides by steps).
struct ExchangeStats {
  int64_t steps = 0, buckets = 0;
  double span_ms = 0;     // first bucket started -> last one done
  double exposed_ms = 0;  // waited for after backward (the rest hid behind it)
};

struct EvalResult {
  double seconds = 0, loss = 0, accuracy = 0;
  int64_t images = 0;
};

// Mean time of each part of a step, from a sample of steps timed with a synchronize between
// parts (so a user sees whether data, forward, backward or the optimizer holds the device back).
// host_ms / whole_ms come from other sampled steps, timed without synchronizes inside: host_ms is
// how long the host takes to issue the step, whole_ms until the device has finished it. On a GPU,
// host_ms close to whole_ms means the host (launch overhead) holds the device back; on the CPU
// the two are the same.
struct StepSplit {
  double data_ms = 0, forward_ms = 0, loss_ms = 0, backward_ms = 0, optimizer_ms = 0;
  double exchange_ms = 0;  // waiting for the other ranks' gradients after backward
  int64_t samples = 0;
  double host_ms = 0, whole_ms = 0;
  int64_t host_samples = 0;
};

// Per node, milliseconds added by timed passes: each plan step's time goes to its node.
struct NodeTimes {
  std::vector<double> forward_ms, backward_ms;
};

// What an executor is made for: training (and its test pass), or only test passes of a model
// loaded into it (`evaluate`), which needs no gradients, optimizer state or training set on the
// device.
enum class ExecutorUse : uint8_t { train, test_only };

// The device buffers, for checkpoints and tests: read them, never keep them past the executor.
struct DeviceBuffers {
  float *params = nullptr, *grads = nullptr, *opt_m = nullptr, *opt_v = nullptr;
  float* state = nullptr;         // BN running statistics
  std::vector<float*> out, grad;  // per node: output and its gradient, [batch, c,h,w]
  std::vector<float*> saved;      // per node: BN save_mean|save_invstd (2c)
  std::vector<int32_t*> argmax;   // per node: max-pool winners
  float* scratch = nullptr;       // gradient of a second consumer, then added
  int32_t* labels = nullptr;
  float* metrics = nullptr;      // [train loss sum, train correct, eval loss, eval correct]
  StepCursor* cursor = nullptr;  // where training is: the step reads it and advances it
  StepCursor* eval_cursor = nullptr;
  int32_t* train_indices = nullptr;  // this epoch's order
  int32_t* test_indices = nullptr;   // 0..test_count-1
  // The data set as read (test_only: no training set).
  uint8_t *train_images = nullptr, *train_labels = nullptr;
  uint8_t *test_images = nullptr, *test_labels = nullptr;
};

class Executor {
 public:
  Executor(const Model& m, Backend& b, const Hyper& h, const Workload& w, const DatasetPair& data,
           ExecutorUse use = ExecutorUse::train, const DataParallel& dp = {});
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  const Model& model() const { return model_; }
  const Plan& plan() const { return plan_; }
  Backend& backend() const { return be_; }
  const Hyper& hyper() const { return hp_; }
  bool trains() const { return use_ == ExecutorUse::train; }
  int64_t train_count() const { return train_count_; }
  int64_t test_count() const { return test_count_; }
  int64_t max_batch() const { return max_batch_; }
  const DeviceBuffers& buffers() const { return buf_; }
  const ArenaLayout& arena_layout() const { return layout_; }
  Comm* comm() const { return dp_.comm; }
  int rank() const { return rank_; }
  int ranks() const { return ranks_; }
  // This rank's images of a step of n (the global batch's shard).
  int64_t shard(int64_t n) const;
  const ExchangeStats& exchange_stats() const { return exchange_; }

  // ---- one training step ----
  // n: the step's images over all ranks (this rank takes shard(n) of them).
  // On the n images where the cursor stands: replayed from a graph where one is recorded, else
  // issued. split: time the parts (synchronizing between them), unless the step runs fused.
  void step(int64_t n, StepSplit* split);
  // Issues the ops of one step in order (what a graph records): the backend's fused MLP step
  // where the plan and backend take it (not with times: a sampled step runs as the others do,
  // so sampling changes no number), else the plan's steps; the cursor's advance last. With split,
  // an op-by-op step's parts are timed (and with times each plan step); a size's first op-by-op
  // step is not (it makes the ops' plans) and leaves split->samples as it was.
  void issue_step(int64_t n, StepSplit* split, NodeTimes* times = nullptr);
  // The parts of issue_step, in its order (tests call them one by one).
  void load_train_batch(int64_t n);
  void forward(int64_t n, bool training, NodeTimes* times = nullptr);
  // The gradient is scaled 1/step_n (the step's images over all ranks; 0: n), so that the ranks'
  // sum is the mean over the whole batch.
  void loss(int64_t n, int64_t step_n = 0);
  void backward(int64_t n, NodeTimes* times = nullptr);
  // Over several ranks: sums the gradients (the buckets backward started, then the rest) and
  // waits for them. Nothing on one rank.
  void exchange_gradients();
  void optimizer_update();  // the update, then the cursor advances

  // Cuts the images at indices[0 .. n) into the input node and labels.
  void load_batch(const BatchSpec& spec, const uint8_t* images, const uint8_t* lbls,
                  const int32_t* indices, int64_t n, uint64_t seed);
  const BatchSpec& test_spec() const { return test_spec_; }

  // ---- epochs (the runner) ----
  // Puts `order` in the training indices and the cursor at `step` of `epoch`, and the epoch's
  // running sums (loss, correct) at what they were (zeros for a fresh epoch).
  void begin_epoch(int64_t epoch, const std::vector<int32_t>& order, int64_t step,
                   float loss_sum = 0, float correct = 0);
  // Only the cursor's place (the training order stays).
  void start_epoch(int64_t epoch, int64_t step = 0);
  // The epoch's running sums: loss, correct answers (waits for the device).
  std::array<float, 2> train_sums() const;
  void synchronize() const;

  // ---- the test pass ----
  // The whole test set, in order, batch norm in eval mode: accuracy and loss.
  EvalResult evaluate();
  // Its parts (evaluate() is these): the eval cursor to the first batch and the sums to zero;
  // then one batch of n images where the eval cursor stands (data, forward, loss and correct
  // count into the sums, advance), whose logits are in buffers().out.back() until the next.
  void start_test_pass();
  void test_batch(int64_t n);

  // ---- state ----
  // Rank 0's parameters, optimizer state, batch-norm statistics and update count to every rank
  // (at the start and after a resume: every rank then steps from the same weights).
  void broadcast_state();
  std::vector<float> download_params() const;
  void upload_params(const std::vector<float>& p);
  // Per node, how the backend runs it at the training batch (its OpCache::note), "" where it
  // says nothing or before the first step; and the precision it ran in where not the run's.
  std::vector<std::string> node_notes() const;
  std::vector<std::optional<Precision>> node_precisions() const;
  // One line for the record and the CLI: how many steps ran from graphs, or why none did.
  std::string graph_summary() const;
  bool fused_mlp_taken() const { return fused_issues_ > 0; }
  // Timed passes whose device gate let go before the host had issued the pass.
  int64_t host_paced_passes() const { return host_paced_passes_; }

 private:
  // Graphs (where the backend records them: CUDA graphs): per batch size, the whole training
  // step, recorded on the second step of that size and replayed from then on; the first runs as
  // issued because it builds the caches and measures algorithms, which a recording must not
  // contain. The test pass's batches likewise.
  struct Graphs {
    std::map<int64_t, void*> by_size;
    std::set<int64_t> issued_sizes;  // batch sizes that have run without a graph
    int64_t replays = 0;
  };
  struct PassTimer;

  const Model& model_;
  Backend& be_;
  DataParallel dp_;
  int rank_ = 0, ranks_ = 1;
  // Gradient buckets: after backward step k, the gradients [ready_from_[k], P) are final.
  std::vector<int64_t> ready_from_;
  int64_t started_from_ = 0;  // buckets are under way for [started_from_, P)
  std::vector<int> pending_;  // their requests
  std::chrono::steady_clock::time_point first_bucket_at_;
  ExchangeStats exchange_;
  Hyper hp_;
  Workload workload_;
  ExecutorUse use_;
  Plan plan_;
  int64_t max_batch_ = 0, train_count_ = 0, test_count_ = 0;
  ArenaLayout layout_;
  void* arena_ = nullptr;
  DeviceBuffers buf_;
  BatchSpec train_spec_, test_spec_;
  // Backend caches per node, one set per batch size seen (full and last partial batch, eval).
  std::map<int64_t, std::vector<std::unique_ptr<OpCache>>> caches_;
  Graphs step_graphs_, eval_graphs_;
  std::set<int64_t> op_by_op_sizes_;  // batch sizes whose ops have run one by one (not fused)
  std::string graph_failure_;         // why recording failed; no graphs from then on
  int64_t fused_issues_ = 0;          // fused MLP steps issued (a recording counts once)
  void* node_timers_ = nullptr;       // device timers of a timed pass
  std::vector<int> marked_nodes_;     // the node each pair of marks timed
  int64_t host_paced_passes_ = 0;

  void require_training(const char* what) const;
  void plan_buckets();
  void start_buckets(int64_t ready_from, bool all);
  void free_buffers();
  void fill_initial_state(const DatasetPair& data);
  std::vector<std::unique_ptr<OpCache>>& caches_for(int64_t n);
  const std::vector<std::unique_ptr<OpCache>>& training_caches() const;
  bool fused_mlp_step(int64_t n);
  void issue_forward_step(const ForwardStep& s, int64_t n, bool training,
                          std::vector<std::unique_ptr<OpCache>>& cache);
  void issue_backward_step(const BackwardStep& s, int64_t n,
                           std::vector<std::unique_ptr<OpCache>>& cache);
  bool replay_graph(Graphs& g, int64_t n, const std::function<void()>& issue);
  void run_graphed(Graphs& g, int64_t n, const std::function<void()>& issue);
};

}  // namespace tb
