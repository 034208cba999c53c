// The training loop (llm.c's habit: forward, backward and update side by side, over the model's
// node list). A Trainer owns every buffer of one run on one backend: parameters, gradients,
// optimizer state, activations and their gradients, all carved out of one device allocation that
// is planned once, so a step allocates nothing; and the data set, uploaded once as uint8.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "core/error.h"
#include "data/dataset.h"
#include "models/model.h"
#include "train/workload.h"

namespace tb {

// How node i computes the ReLU node right after it: not at all; in its forward only (dense: the
// ReLU node still runs the backward); or in both directions (batch norm: the ReLU node runs
// nothing, and neither the BN's output nor its gradient is ever materialised).
enum class ReluFusion : uint8_t { none, forward, both };

struct Progress {
  int epoch = 0, epochs = 0;      // epoch counts from 1
  int64_t step = 0, steps = 0;    // within the epoch
  double elapsed_s = 0;           // since the epoch began
  double loss = 0, accuracy = 0;  // running means over the epoch so far
  bool epoch_done = false;
};

struct EpochResult {
  double seconds = 0, loss = 0, accuracy = 0;
  int64_t steps = 0, images = 0;
};

// An epoch a run stopped inside (Ctrl-C, --steps), as a checkpoint holds it to go on from: the
// steps and images so far, their seconds, and the device's running sums of the loss and of the
// correct answers as they stood (floats: the resumed run adds on to the same bits).
struct EpochSoFar {
  int64_t steps = 0, images = 0;
  double seconds = 0;
  float loss_sum = 0, correct = 0;
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
  int64_t samples = 0;
  double host_ms = 0, whole_ms = 0;
  int64_t host_samples = 0;
};

struct TrainResult {
  std::vector<EpochResult> epochs;  // a resumed run's starts with the checkpoint's
  int resumed_epochs = 0;           // how many of them the checkpoint held
  int64_t resumed_steps = 0;        // and the steps of the epoch after them it had trained
  double resumed_seconds = 0;       // the checkpoint's training time: in no other time here
  int64_t checkpoints = 0;          // checkpoints written (not counting failures)
  double checkpoint_seconds = 0;    // time writing them: in no other time here
  double train_seconds = 0;         // this run's training only (not a checkpoint's epochs)
  int64_t steps = 0, images = 0;
  double images_per_s = 0, images_per_s_steady = 0;
  bool stopped_by_steps = false;  // --steps cut training short
  bool interrupted = false;       // the stop flag was raised (Ctrl-C): training ended there
  StepSplit split;
};

struct Checkpoint;  // train/checkpoint.h

// What train() does with checkpoints: starts where `resume` (read from resume_path, which error
// messages name) stopped, and hands `write` the state after each finished epoch, where training
// stops inside an epoch (Ctrl-C, --steps) and, with every_s, inside an epoch once every_s
// seconds have passed since the last (a long epoch's work is not lost to a kill or a power cut);
// it returns whether the checkpoint was written.
struct CheckpointPlan {
  const Checkpoint* resume = nullptr;
  std::string resume_path;
  std::function<bool(const Checkpoint&)> write;
  double every_s = 0;  // 0: at epochs' ends and where training stops only
};

// What a Trainer is made for: training (and its test pass), or only test passes of a model
// loaded into it (`evaluate`), which needs no gradients, optimizer state or training set on the
// device: ResNet-50 on CIFAR-10 at batch 128 takes 334 MB of arena and 31 MB of data instead of
// 860 MB and 184 MB.
enum class TrainerUse : uint8_t { train, test_only };

struct Trainer {
  const Model& model;
  Backend& be;
  Hyper hp;
  Workload workload;
  TrainerUse use = TrainerUse::train;
  bool trains() const { return use == TrainerUse::train; }
  int64_t max_batch = 0;
  int64_t train_count = 0, test_count = 0;

  // One device allocation for parameters, gradients, optimizer and BN state, activations.
  // test_only: no gradients, optimizer state, scratch or training indices (null), and the
  // training set is not uploaded (train_images and train_labels null).
  void* arena = nullptr;
  float *params = nullptr, *grads = nullptr, *opt_m = nullptr, *opt_v = nullptr;
  float* state = nullptr;               // BN running statistics
  std::vector<float*> out, grad;        // per node: output and its gradient, [max_batch, c,h,w]
  std::vector<float*> saved;            // per node: BN save_mean|save_invstd (2c)
  std::vector<int32_t*> argmax;         // per node: max-pool winners
  std::vector<int> consumers;           // per node: how many nodes read its output
  std::vector<ReluFusion> relu_fusion;  // per node: whether it computes the ReLU after it
  // A batch norm whose one consumer is a residual add, itself read only by the ReLU right after
  // it (ResNet's bn3 -> add -> relu3), runs at the add in one forward with both, where the
  // backend has that entry: per add node the BN it runs, and per BN node the add it runs at
  // (-1 elsewhere). Neither writes an output of its own; the backward is unchanged.
  std::vector<int> bn_of_add, add_of_bn;
  std::vector<uint8_t> grad_written;  // backward: whose gradient has its first writer yet
  std::vector<int> grad_of_add;       // per node: the add whose gradient buffer it shares, or -1
  float* scratch = nullptr;           // gradient of a second consumer, then added
  int32_t* labels = nullptr;
  float* metrics = nullptr;           // [train loss sum, train correct, eval loss, eval correct]
  StepCursor* cursor = nullptr;       // where training is: the step reads it and advances it
  StepCursor* eval_cursor = nullptr;  // where the test pass is, likewise
  int32_t* train_indices = nullptr;   // this epoch's permutation
  int32_t* test_indices = nullptr;    // 0..test_count-1

  // The data set on the device, as read.
  uint8_t *train_images = nullptr, *train_labels = nullptr;
  uint8_t *test_images = nullptr, *test_labels = nullptr;
  BatchSpec train_spec, test_spec;

  // Backend caches per node, one set per batch size seen (full and last partial batch, eval).
  std::map<int64_t, std::vector<std::unique_ptr<OpCache>>> caches;

  // Graphs (where the backend records them: CUDA graphs): per batch size, the whole training step
  // (data cut, forward, loss, backward, optimizer update), recorded on the second step of that
  // size and replayed from then on, so the host issues one launch per step instead of one per
  // op. What changes from step to step (batch offset, augmentation seed, Adam's step count) the
  // ops read from the cursor on the device, which the step's last op advances. The first step
  // of each size runs as issued because it builds the caches and measures algorithms, which a
  // recording must not contain.
  // The test pass's batches likewise (data cut from the eval cursor, forward, loss, advance).
  struct Graphs {
    std::map<int64_t, void*> by_size;
    std::set<int64_t> issued_sizes;  // batch sizes that have run without a graph
    int64_t replays = 0;
  };
  Graphs step_graphs, eval_graphs;
  std::set<int64_t> op_by_op_sizes;  // batch sizes whose ops have run one by one (not fused)
  std::string graph_failure;         // why recording failed; no graphs from then on

  // The model is a one-hidden-layer MLP trained with Adam, without augmentation, whose step the
  // backend may run fused (Backend::mlp_step); and how often the fused step was issued (a
  // recording counts once, its replays not at all).
  bool mlp_fusable = false;
  int64_t fused_issues = 0;

  // Profiles on a backend with device timers: marks around each node of a pass (trainer.cpp's
  // PassTimer), and the node each pair of marks timed.
  void* node_timers = nullptr;
  std::vector<size_t> marked_nodes;
  int64_t host_paced_passes = 0;  // passes whose gate let go on its own (timed at host pace)

  Trainer(const Model& m, Backend& b, const Hyper& h, const Workload& w, const DatasetPair& data,
          TrainerUse use = TrainerUse::train);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  std::vector<std::unique_ptr<OpCache>>& caches_for(int64_t n);
  // Per node, how the backend runs it at the training batch (its OpCache::note, e.g. the
  // convolution algorithm it chose), "" where it says nothing or before the first step.
  std::vector<std::string> node_notes() const;
  // Per node, the precision it ran in where the backend chose another than the run's.
  std::vector<std::optional<Precision>> node_precisions() const;
  // The per-node caches at the training batch (none before the first step).
  const std::vector<std::unique_ptr<OpCache>>& training_caches() const;
  // Cuts the images at indices[0 .. n) into the input node and labels.
  void load_batch(const BatchSpec& spec, const uint8_t* images, const uint8_t* lbls,
                  const int32_t* indices, int64_t n, uint64_t seed);
  // Cuts the training batch of n images where the cursor stands.
  void load_train_batch(int64_t n);
  // Puts the cursor at `step` of `epoch` (after the epoch's permutation is in train_indices).
  void start_epoch(int64_t epoch, int64_t step = 0);
  // node_ms (optional, one entry per node): adds each node's time, synchronizing around it
  // (profiling only: the synchronizes cost what a step does not otherwise pay).
  void forward(int64_t n, bool training, std::vector<double>* node_ms = nullptr);
  void backward(int64_t n, std::vector<double>* node_ms = nullptr);
  // The update, then the cursor advances: the step's last ops.
  void optimizer_update();
  // Softmax cross-entropy on the last node's output: the loss's gradient into its gradient
  // buffer, loss sum and correct count added to the training metrics.
  void loss(int64_t n);
  // Replays g's graph for batch size n, recording it first from `issue` where that size has run
  // as issued before (the caller adds a size it issues to g.issued_sizes); false when the ops
  // must be issued instead.
  bool replay_graph(Graphs& g, int64_t n, const std::function<void()>& issue);
  // Replays g's graph for size n where it can, else issues (and marks the size issued).
  void run_graphed(Graphs& g, int64_t n, const std::function<void()>& issue);
  // One line for the record and the CLI: how many steps ran from graphs, or why none did.
  std::string graph_summary() const;
  // One training step on the n images where the cursor stands: data, forward, loss, backward,
  // update; replayed from a graph where one is recorded, else issued.
  // split: time the parts (synchronizing between them; then op by op, never fused).
  void step(int64_t n, StepSplit* split);
  // Issues the ops of one step in order (what a graph records): the backend's fused step where
  // it takes this one (not with split), else op by op; the cursor's advance last. With split,
  // the parts are timed (and with node_ms each node, as forward/backward's); a size's first op
  // by op step is not (it makes the ops' plans) and leaves split->samples as it was.
  void issue_step(int64_t n, StepSplit* split, std::vector<double>* forward_node_ms = nullptr,
                  std::vector<double>* backward_node_ms = nullptr);
  // The backend's fused MLP step for n images; false where there is none or it declined.
  bool fused_mlp_step(int64_t n);
  // One test-pass batch of n images where the eval cursor stands: data, forward, loss and
  // correct count into the eval metrics, advance.
  void issue_eval_batch(int64_t n);
  EvalResult evaluate();
  // stop: read before each step; once raised, training ends after the step under way (the
  // partial epoch counted, and checkpointed where checkpoints are written).
  TrainResult train(const std::function<void(const Progress&)>& on_progress,
                    const CheckpointPlan& checkpoints = {},
                    const std::atomic<bool>* stop = nullptr);
  // The run's state after r's finished epochs and `so_far` of the next (shuffle_rng: the shuffle
  // generator's state before that next epoch's shuffle), and back: restore checks that the
  // checkpoint fits this run (check_resumable) before loading it.
  Checkpoint checkpoint(const TrainResult& r, const std::string& shuffle_rng,
                        const EpochSoFar& so_far) const;
  void restore(const Checkpoint& c, const std::string& path);
  // Only c's parameters and batch-norm statistics (not its optimizer state or place): a trained
  // model to test, on any backend, precision or batch size.
  void load_model(const Checkpoint& c, const std::string& path);

  // Every buffer's offset in the arena for a batch size, and the arena's size.
  struct ArenaLayout {
    size_t total = 0;
    size_t params = 0, grads = 0, m = 0, v = 0, state = 0, scratch = 0, labels = 0, metrics = 0,
           cursor = 0, eval_cursor = 0, train_idx = 0, test_idx = 0;
    std::vector<size_t> out, grad, saved, argmax;  // per node
  };
  ArenaLayout layout_arena(int64_t batch) const;
  void free_buffers();  // the arena and the data set
  // Fails for a test_only Trainer: at train, issue_step, backward, checkpoint and restore, the
  // entries through which anything reaches the training-only buffers.
  void require_training(const char* what) const;
  // Initial parameters and BN statistics from the seed, test indices, batch specs.
  void fill_initial_state(const DatasetPair& data);
  // The backend's out-of-memory error restated for the run: what the batch needs, what is free
  // (counting what the run had already taken), and the largest batch that fits.
  OutOfMemory out_of_memory(const OutOfMemory& e, size_t taken, size_t data_bytes) const;

  std::vector<float> download_params() const;
  void upload_params(const std::vector<float>& p);
};

}  // namespace tb
