// A run's state at the end of an epoch or where it stopped inside one (Ctrl-C, --steps), on disk,
// so an interrupted run goes on as if it had never stopped: parameters, Adam's moments (or SGD's
// momentum), batch-norm statistics, the optimizer's update count and the shuffle generator's
// state, plus the finished epochs' results and the cut epoch's sums so far. Resuming
// trains the same steps on the same batches: on a deterministic backend the parameters match an
// uninterrupted run's bit for bit.
//
// File (little-endian): "TBCKPT" 0 1 (magic, version 1), u64 length of the JSON header, the
// header, the four float arrays in the order above (their lengths in the header), and a CRC-32
// of everything before it. Written atomically (temp file, fsync, rename), so the previous
// checkpoint stays whole until the new one is.
#pragma once
#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/runner.h"
#include "train/workload.h"

namespace tb {

struct Checkpoint {
  std::string workload;
  int64_t param_count = 0, state_count = 0;
  int64_t train_count = 0;  // training images: another set would cut other batches
  nlohmann::json hyper;     // hyper_json of the run that wrote it
  std::string device;       // the backend that wrote it ("cpu-onednn", "cuda"), for the record
  int epochs_done = 0;      // finished epochs; a resumed run starts at epochs_done + 1
  EpochSoFar epoch_so_far;  // of epoch epochs_done + 1 where the run stopped inside it
  int64_t updates = 0;      // optimizer updates so far (Adam's bias correction counts them)
  // std::mt19937_64's state (as its operator<< writes it) before epoch epochs_done + 1 shuffles
  std::string shuffle_rng;
  std::vector<EpochResult> epochs;  // the finished epochs' results, times included
  std::vector<float> params, opt_m, opt_v, state;
};

// Where c stands, for messages: "after epoch 3" or "at step 900 of epoch 4".
std::string checkpoint_place(const Checkpoint& c);

// Frees c's four arrays (16 bytes a parameter, about 380 MB for ResNet-50) once a trainer has
// restored them; the header's fields stay for the record.
void release_arrays(Checkpoint& c);

void write_checkpoint(const std::string& path, const Checkpoint& c);
// Throws Error naming the file: missing, not a checkpoint, truncated, or its CRC does not match.
Checkpoint read_checkpoint(const std::string& path);
// The same from a stream of `size` bytes (a file's, or a test's), named `path` in messages.
Checkpoint read_checkpoint(std::istream& in, uint64_t size, const std::string& path);

// Throws Error naming the first thing that differs where a run resumed from c would not train
// what an uninterrupted run does: workload, batch, seed, augmentation, optimizer and its
// settings (restore_checkpoint adds the model's sizes). Epochs, steps, precision, device and
// threads may differ; epochs must exceed c.epochs_done.
void check_resumable(const Checkpoint& c, const std::string& path, const Hyper& hp);

// The executor's state after r's finished epochs and `so_far` of the next (shuffle_rng: the
// shuffle generator's state before that next epoch's shuffle), and back: restore checks that the
// checkpoint fits this run (check_resumable and the model's sizes) before loading it.
Checkpoint capture_checkpoint(const Executor& ex, const TrainResult& r,
                              const std::string& shuffle_rng, const EpochSoFar& so_far);
void restore_checkpoint(Executor& ex, const Checkpoint& c, const std::string& path);
// Only c's parameters and batch-norm statistics (not its optimizer state or place): a trained
// model to test, on any backend, precision or batch size.
void load_model(Executor& ex, const Checkpoint& c, const std::string& path);

}  // namespace tb
