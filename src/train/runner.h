// The runner: a whole training run on an executor. Epochs, each with a new shuffle; the step
// sampling that times the parts of a step; progress; the stop flag (Ctrl-C); the checkpoint
// schedule. It issues nothing itself: every step is Executor::step.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "train/executor.h"

namespace tb {

struct Checkpoint;  // train/checkpoint.h

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
  // A non-finite loss ended training: at diverged_step (counted over the whole run, a
  // checkpoint's steps included), exactly where the device's sums are read every step (the
  // CPU), else at the first step they were read after it (by then). diverged_layer: the first
  // node in forward order whose output in the last step, else whose parameters, held a value
  // that is not finite ("" if none).
  bool diverged = false;
  bool diverged_step_exact = true;
  int64_t diverged_step = 0;
  int diverged_epoch = 0;
  std::string diverged_layer;
  StepSplit split;
  // (epochs into the run, mean training loss over the stretch of steps ending there): about 200
  // stretches a run, so a run of a few epochs or steps still has a loss curve.
  std::vector<std::pair<double, double>> loss_samples;
};

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

// stop: read before each step; once raised, training ends after the step under way (the
// partial epoch counted, and checkpointed where checkpoints are written). A non-finite loss
// ends training too (TrainResult::diverged), and then no checkpoint is written: the last one
// written holds the run as it was before.
TrainResult train(Executor& ex, const std::function<void(const Progress&)>& on_progress,
                  const CheckpointPlan& checkpoints = {}, const std::atomic<bool>* stop = nullptr);

}  // namespace tb
