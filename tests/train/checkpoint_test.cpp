// Checkpoints: a run stopped after an epoch and resumed from its checkpoint ends where the
// uninterrupted run does, to the bit; a damaged or mismatched checkpoint is one clear error.
#include "train/checkpoint.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "../models/tiny_resnet.h"
#include "core/error.h"
#include "synthetic_data.h"
#include "train/checkpoint.h"
#include "train/executor.h"
#include "train/runner.h"

namespace tb {

using testing::synthetic;
using testing::tiny_resnet;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          (name + "." + std::to_string(::getpid()) + ".tbck"))
      .string();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

struct RunEnd {
  std::vector<float> params, state;
  TrainResult result;
  EvalResult eval;
};

// Trains m for hp.epochs (after `resume`'s, where given), writing a checkpoint after each epoch
// to `write_to` where given.
RunEnd train(const Model& m, const Hyper& hp, const DatasetPair& data, const Checkpoint* resume,
             const std::string& write_to = "") {
  BackendConfig cfg{DeviceKind::cpu, 0, Precision::fp32, 1, true};  // the reference: exact
  auto be = make_backend(cfg);
  Executor t(m, *be, hp, find_workload(hp.workload), data);
  CheckpointPlan plan;
  if (resume) plan.resume = resume, plan.resume_path = "resume.tbck";
  if (!write_to.empty())
    plan.write = [&write_to](const Checkpoint& c) {
      write_checkpoint(write_to, c);
      return true;
    };
  RunEnd r;
  r.result = train(t, nullptr, plan);
  r.eval = t.evaluate();
  r.params = t.download_params();
  r.state.resize(size_t(m.state_count));
  if (!r.state.empty())
    be->download(be->ctx, r.state.data(), t.buffers().state, r.state.size() * sizeof(float));
  return r;
}

// The small MLP run the file tests use: 32 images of 4x4, batch 16, one epoch.
const DatasetPair& small_data() {
  static const DatasetPair data = synthetic(32, 1, 4, 4, 13);
  return data;
}
Hyper small_hyper() {
  Hyper hp = find_workload("fashion-mlp").defaults;
  hp.batch = 16, hp.epochs = 1;
  return hp;
}
// Trains the small MLP for its epoch, writing the checkpoint to a temp file; returns its path.
std::string one_epoch_checkpoint(const std::string& name) {
  const std::string path = temp_path(name);
  train(build_mlp(1, 4, 4, {8}, 10), small_hyper(), small_data(), nullptr, path);
  return path;
}

}  // namespace

// A ResNet (batch-norm statistics), augmentation (per-step seeds), Adam (its update count) and a
// partial last batch: everything a resumed run must pick up where the first one stopped.
TEST(Checkpoint, ResumedRunEndsWhereTheUninterruptedOneDoes) {
  const DatasetPair data = synthetic(40, 3, 16, 16, 11);  // 40 = 16 + 16 + 8
  Hyper hp = find_workload("resnet50-cifar10").defaults;
  hp.batch = 16, hp.epochs = 3, hp.augment = true;
  const Model m = tiny_resnet(3, 1, 4);
  ASSERT_GT(m.state_count, 0);
  const RunEnd whole = train(m, hp, data, nullptr);

  const std::string path = temp_path("tb_resume");
  Hyper first = hp;
  first.epochs = 1;
  const RunEnd part = train(m, first, data, nullptr, path);
  EXPECT_EQ(part.result.checkpoints, 1);
  const Checkpoint c = read_checkpoint(path);
  EXPECT_EQ(c.epochs_done, 1);
  EXPECT_EQ(c.updates, 3);  // three steps an epoch
  EXPECT_EQ(c.params, part.params);
  EXPECT_EQ(c.state, part.state);
  EXPECT_NE(c.params, whole.params);

  const RunEnd resumed = train(m, hp, data, &c, path);
  EXPECT_EQ(resumed.params, whole.params);
  EXPECT_EQ(resumed.state, whole.state);
  EXPECT_EQ(resumed.eval.loss, whole.eval.loss);
  EXPECT_EQ(resumed.result.resumed_epochs, 1);
  EXPECT_EQ(resumed.result.steps, 6);  // this run's own steps
  ASSERT_EQ(resumed.result.epochs.size(), 3u);
  EXPECT_EQ(resumed.result.epochs[0].seconds, part.result.epochs[0].seconds);  // carried over
  for (size_t e = 0; e < 3; ++e)
    EXPECT_EQ(resumed.result.epochs[e].loss, whole.result.epochs[e].loss) << e;
  // The resumed run wrote on: the file now holds all three epochs.
  EXPECT_EQ(read_checkpoint(path).epochs_done, 3);
  std::filesystem::remove(path);
}

// Where training stops inside an epoch (--steps here, Ctrl-C alike), the checkpoint holds the
// epoch as it stood: its steps, images, time and the device's sums, and the generator's state
// before its shuffle. Resumed there, the run ends where the uninterrupted one does, to the bit:
// the batches (the same permutation, per-step augmentation seeds), Adam's count, batch-norm
// statistics and the epoch's loss and accuracy. Cut inside the first epoch and before the
// partial last batch of the second.
TEST(Checkpoint, RunCutInsideAnEpochResumesAtItsStep) {
  const DatasetPair data = synthetic(40, 3, 16, 16, 12);  // 40 = 16 + 16 + 8: 3 steps an epoch
  Hyper hp = find_workload("resnet50-cifar10").defaults;
  hp.batch = 16, hp.epochs = 3, hp.augment = true;
  const Model m = tiny_resnet(3, 1, 4);
  const RunEnd whole = train(m, hp, data, nullptr);
  for (const int64_t cut : {1, 5}) {
    SCOPED_TRACE(cut);
    const std::string path = temp_path("tb_cut");
    Hyper first = hp;
    first.steps = cut;
    const RunEnd part = train(m, first, data, nullptr, path);
    EXPECT_EQ(part.result.checkpoints, cut / 3 + 1);  // after each whole epoch, then at the cut
    Checkpoint c = read_checkpoint(path);
    EXPECT_EQ(c.epochs_done, cut / 3);
    EXPECT_EQ(c.epoch_so_far.steps, cut % 3);
    EXPECT_EQ(c.epoch_so_far.images, 16 * (cut % 3));
    EXPECT_EQ(c.epoch_so_far.seconds, part.result.epochs.back().seconds);
    EXPECT_EQ(c.updates, cut);
    EXPECT_EQ(c.params, part.params);
    EXPECT_EQ(checkpoint_place(c), cut == 1 ? "at step 1 of epoch 1" : "at step 2 of epoch 2");

    const RunEnd resumed = train(m, hp, data, &c, path);
    EXPECT_EQ(resumed.params, whole.params);
    EXPECT_EQ(resumed.state, whole.state);
    EXPECT_EQ(resumed.eval.loss, whole.eval.loss);
    EXPECT_EQ(resumed.result.steps, 9 - cut);  // this run's own
    EXPECT_EQ(resumed.result.resumed_epochs, cut / 3);
    EXPECT_EQ(resumed.result.resumed_steps, cut % 3);
    double before = c.epoch_so_far.seconds;
    for (const EpochResult& e : c.epochs) before += e.seconds;
    EXPECT_EQ(resumed.result.resumed_seconds, before);
    ASSERT_EQ(resumed.result.epochs.size(), 3u);
    for (size_t e = 0; e < 3; ++e) {
      EXPECT_EQ(resumed.result.epochs[e].loss, whole.result.epochs[e].loss) << e;
      EXPECT_EQ(resumed.result.epochs[e].accuracy, whole.result.epochs[e].accuracy) << e;
      EXPECT_EQ(resumed.result.epochs[e].images, 40) << e;
    }
    EXPECT_EQ(read_checkpoint(path).epochs_done, 3);  // it wrote on

    // A cut that does not fit the epoch (a damaged or hand-made file): one clear error.
    c.epoch_so_far.steps = 3;
    EXPECT_NE(error_of([&] { train(m, hp, data, &c); }).find("corrupt (3 steps and"),
              std::string::npos);
    std::filesystem::remove(path);
  }
}

// The stop flag (Ctrl-C in the CLI): training ends after the step under way; the partial epoch
// counts in the result, and no checkpoint is written for it.
// --checkpoint-every: inside epochs too, once the interval has passed (here at once: after every
// step), each one resumable to the same end; the checkpoints' time is in no epoch's.
TEST(Checkpoint, EveryIntervalWritesInsideEpochs) {
  const DatasetPair data = synthetic(40, 1, 6, 6, 17);
  Hyper hp = find_workload("fashion-mlp").defaults;
  hp.batch = 16, hp.epochs = 2;  // 3 steps an epoch
  const Model m = build_mlp(1, 6, 6, {8}, 10);
  const RunEnd whole = train(m, hp, data, nullptr);
  auto be = make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, true});
  Executor t(m, *be, hp, find_workload(hp.workload), data);
  std::vector<Checkpoint> written;
  CheckpointPlan plan;
  plan.every_s = 1e-9;
  plan.write = [&written](const Checkpoint& c) {
    written.push_back(c);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // a slow disk
    return true;
  };
  const TrainResult r = train(t, nullptr, plan);
  ASSERT_EQ(written.size(), 6u);  // steps 1 and 2, epoch 1's end, steps 1 and 2, epoch 2's end
  EXPECT_EQ(r.checkpoints, 6);
  const std::string places[6] = {"at step 1 of epoch 1", "at step 2 of epoch 1", "after epoch 1",
                                 "at step 1 of epoch 2", "at step 2 of epoch 2", "after epoch 2"};
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(checkpoint_place(written[i]), places[i]);
    EXPECT_EQ(written[i].updates, int64_t(i + 1));
  }
  EXPECT_EQ(t.download_params(), whole.params);  // checkpoints change nothing
  // 0.6 s of writes, 0.4 s of them inside epochs; the steps take microseconds (a margin of
  // 0.3 s for a stalled machine).
  EXPECT_GE(r.checkpoint_seconds, 0.6);
  EXPECT_LT(r.train_seconds, 0.3);
  EXPECT_LT(r.epochs[0].seconds + r.epochs[1].seconds, 0.3);
  const RunEnd from_step_4 = train(m, hp, data, &written[3]);
  EXPECT_EQ(from_step_4.result.steps, 2);
  EXPECT_EQ(from_step_4.params, whole.params);
  EXPECT_EQ(from_step_4.result.epochs[1].loss, whole.result.epochs[1].loss);
}

TEST(Checkpoint, StopFlagEndsTrainingAfterTheStepUnderWay) {
  const DatasetPair data = synthetic(40, 1, 6, 6, 15);
  Hyper hp = find_workload("fashion-mlp").defaults;
  hp.batch = 8, hp.epochs = 3;  // 5 steps an epoch
  const Model m = build_mlp(1, 6, 6, {8}, 10);
  auto be = make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, true});
  Executor t(m, *be, hp, find_workload(hp.workload), data);
  std::atomic<bool> stop{false};
  int64_t steps_seen = 0;
  CheckpointPlan plan;
  int written = 0;
  plan.write = [&written](const Checkpoint&) {  // as if the disk were full
    written++;
    return false;
  };
  // Progress comes at most every 0.1 s and at each epoch's end: raise the flag at the first
  // epoch's end, then a second run raises it before any step.
  const TrainResult r = train(
      t,
      [&](const Progress& p) {
        steps_seen = p.step;
        if (p.epoch_done) stop = true;
      },
      plan, &stop);
  EXPECT_TRUE(r.interrupted);
  EXPECT_FALSE(r.stopped_by_steps);
  EXPECT_EQ(r.steps, 5);
  EXPECT_EQ(steps_seen, 5);
  ASSERT_EQ(r.epochs.size(), 1u);  // the second epoch had not begun a step: not counted
  EXPECT_EQ(written, 1);           // tried once, after the first epoch
  EXPECT_EQ(r.checkpoints, 0);     // and not counted: it failed
  EXPECT_GT(r.images_per_s, 0);
  const TrainResult none = train(t, nullptr, {}, &stop);
  EXPECT_TRUE(none.interrupted);
  EXPECT_EQ(none.steps, 0);
  EXPECT_TRUE(none.epochs.empty());
}

TEST(Checkpoint, DamagedFilesAreOneClearError) {
  const std::string path = one_epoch_checkpoint("tb_damage");
  std::vector<char> bytes(std::filesystem::file_size(path));
  std::ifstream(path, std::ios::binary).read(bytes.data(), std::streamsize(bytes.size()));
  const std::string bad = temp_path("tb_bad");
  auto read_altered = [&](std::vector<char> b) {
    std::ofstream(bad, std::ios::binary).write(b.data(), std::streamsize(b.size()));
    return error_of([&] { read_checkpoint(bad); });
  };
  EXPECT_EQ(error_of([&] { read_checkpoint(path); }), "(no error)");
  // Cut anywhere: in the magic, the header, an array, the checksum.
  for (size_t keep : {size_t(3), size_t(20), bytes.size() / 2, bytes.size() - 1}) {
    const std::string e = read_altered({bytes.begin(), bytes.begin() + ptrdiff_t(keep)});
    EXPECT_NE(e.find("truncated"), std::string::npos) << keep << ": " << e;
  }
  // One bit flipped in the parameters, or in the checksum itself.
  for (size_t at : {bytes.size() / 2, bytes.size() - 2}) {
    std::vector<char> b = bytes;
    b[at] ^= 4;
    const std::string e = read_altered(b);
    EXPECT_NE(e.find("checksum does not match"), std::string::npos) << at << ": " << e;
  }
  std::vector<char> more = bytes;
  more.push_back('x');
  EXPECT_NE(read_altered(more).find("corrupt ("), std::string::npos);
  std::vector<char> other = bytes;
  other[0] = '{';
  EXPECT_NE(read_altered(other).find("not a trainbench checkpoint"), std::string::npos);
  std::vector<char> newer = bytes;
  newer[7] = 2;
  EXPECT_NE(read_altered(newer).find("format version 2"), std::string::npos);
  EXPECT_NE(error_of([] { read_checkpoint("/nonexistent/x.tbck"); }).find("cannot open"),
            std::string::npos);
  std::filesystem::remove(path);
  std::filesystem::remove(bad);
}

TEST(Checkpoint, ResumingAnotherRunIsRefusedNamingWhatDiffers) {
  const Hyper hp = small_hyper();
  const std::string path = one_epoch_checkpoint("tb_mismatch");
  const Checkpoint c = read_checkpoint(path);
  std::filesystem::remove(path);
  auto refusal = [&](const std::function<void(Hyper&)>& change) {
    Hyper h = hp;
    h.epochs = 2;
    change(h);
    return error_of([&] { check_resumable(c, path, h); });
  };
  EXPECT_EQ(refusal([](Hyper&) {}), "(no error)");
  EXPECT_EQ(refusal([](Hyper& h) { h.precision = Precision::bf16, h.threads = 7; }), "(no error)");
  EXPECT_NE(refusal([](Hyper& h) { h.batch = 8; }).find("batch 16"), std::string::npos);
  EXPECT_NE(refusal([](Hyper& h) { h.seed = 9; }).find("seed"), std::string::npos);
  EXPECT_NE(refusal([](Hyper& h) { h.augment = true; }).find("augment"), std::string::npos);
  EXPECT_NE(refusal([](Hyper& h) { h.adam.lr = 0.5f; }).find("adam"), std::string::npos);
  EXPECT_NE(refusal([](Hyper& h) { h.optimizer = "sgd"; }).find("optimizer"), std::string::npos);
  EXPECT_NE(refusal([](Hyper& h) { h.workload = "resnet50-cifar10"; }).find("workload"),
            std::string::npos);
  EXPECT_NE(
      refusal([](Hyper& h) { h.epochs = 1; }).find("stops after epoch 1; --epochs 1 adds no step"),
      std::string::npos);
  // A model of other sizes: the trainer refuses before loading anything.
  auto be = make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, true});
  Hyper h = hp;
  h.epochs = 2;
  const Model wider = build_mlp(1, 4, 4, {9}, 10);
  Executor t(wider, *be, h, find_workload("fashion-mlp"), small_data());
  EXPECT_NE(error_of([&] { restore_checkpoint(t, c, path); }).find("parameters"),
            std::string::npos);
  // The same model on a data set of another size would cut other batches.
  const Model same = build_mlp(1, 4, 4, {8}, 10);
  Executor other(same, *be, h, find_workload("fashion-mlp"), synthetic(48, 1, 4, 4, 13));
  EXPECT_NE(error_of([&] { restore_checkpoint(other, c, path); }).find("trained on 32 images"),
            std::string::npos);
}

// --steps counts the whole run's steps: a run cut at 5 that checkpointed after its first epoch
// (3 steps), resumed with the same --steps 5, trains 2 more and ends where the straight run did.
TEST(Checkpoint, StepsCountTheWholeRun) {
  const DatasetPair data = synthetic(40, 1, 6, 6, 16);
  Hyper hp = find_workload("fashion-mlp").defaults;
  hp.batch = 16, hp.epochs = 3, hp.steps = 7;
  const Model m = build_mlp(1, 6, 6, {8}, 10);
  const RunEnd whole = train(m, hp, data, nullptr);
  const std::string path = temp_path("tb_steps");
  Hyper first = hp;
  first.steps = 5;  // epoch 1 and 2 steps of epoch 2
  train(m, first, data, nullptr, path);
  const Checkpoint c = read_checkpoint(path);
  ASSERT_EQ(c.epochs_done, 1);
  ASSERT_EQ(c.epoch_so_far.steps, 2);
  const RunEnd resumed = train(m, hp, data, &c);
  EXPECT_EQ(resumed.result.steps, 2);
  EXPECT_TRUE(resumed.result.stopped_by_steps);
  EXPECT_EQ(resumed.params, whole.params);
  hp.steps = 5;  // no step left after the checkpoint's
  EXPECT_NE(error_of([&] { train(m, hp, data, &c); }).find("ran 5 steps already"),
            std::string::npos);
  std::filesystem::remove(path);
}

// A diverged run's NaN loss round-trips (JSON writes it as null); a header whose array sizes
// were damaged is refused before anything is allocated for them.
TEST(Checkpoint, NanLossAndDamagedSizes) {
  Checkpoint c;
  c.workload = "fashion-mlp", c.hyper = {{"batch", 1}}, c.device = "reference";
  c.param_count = 3, c.state_count = 0, c.train_count = 7, c.epochs_done = 1;
  c.shuffle_rng = "1 2 3";
  EpochResult e;
  e.loss = NAN, e.accuracy = 0.1, e.steps = 7, e.images = 7;
  c.epochs = {e};
  c.epoch_so_far = {2, 2, 0.25, NAN, 1};
  c.params = {1, 2, 3}, c.opt_m = {4, 5, 6}, c.opt_v = {7, 8, 9};
  const std::string path = temp_path("tb_nan");
  write_checkpoint(path, c);
  const Checkpoint back = read_checkpoint(path);
  EXPECT_TRUE(std::isnan(back.epochs[0].loss));
  EXPECT_TRUE(std::isnan(back.epoch_so_far.loss_sum));
  EXPECT_EQ(back.epoch_so_far.steps, 2);
  EXPECT_EQ(back.epoch_so_far.images, 2);
  EXPECT_EQ(back.epoch_so_far.seconds, 0.25);
  EXPECT_EQ(back.epoch_so_far.correct, 1.f);
  EXPECT_EQ(back.epochs[0].accuracy, 0.1);
  EXPECT_EQ(back.opt_v, c.opt_v);
  EXPECT_EQ(back.train_count, 7);

  // Every size of 3 parameters made 9 in the header: the file is too short for them.
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  in.close();
  for (const std::string key :
       {"\"param_count\":3", "\"params\":3", "\"opt_m\":3", "\"opt_v\":3"}) {
    const size_t at = bytes.find(key);
    ASSERT_NE(at, std::string::npos) << key;
    bytes[at + key.size() - 1] = '9';
  }
  std::ofstream(path, std::ios::binary) << bytes;
  const std::string err = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(err.find("truncated ("), std::string::npos) << err;
  EXPECT_NE(err.find("where its header says"), std::string::npos) << err;
  // Sizes that disagree with each other.
  c.opt_m.pop_back();
  write_checkpoint(path, c);
  EXPECT_NE(error_of([&] { read_checkpoint(path); }).find("array sizes disagree"),
            std::string::npos);
  std::filesystem::remove(path);
}

// Headers that parse as JSON but would break the reader, each refused in one line before
// anything is allocated for their sizes: counts that are no integer (1e300 has no int64_t),
// array sizes whose byte count wraps past 2^64, a header or arrays longer than the file, and
// nesting deeper than any header has (copying it recursed until the stack overflowed).
TEST(Checkpoint, HostileHeadersAreOneClearError) {
  Checkpoint c;
  c.workload = "fashion-mlp", c.hyper = {{"batch", 1}}, c.device = "reference";
  c.param_count = 3, c.params = {1, 2, 3}, c.opt_m = {4, 5, 6}, c.opt_v = {7, 8, 9};
  const std::string path = temp_path("tb_hostile");
  write_checkpoint(path, c);
  std::ifstream in(path, std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), {});
  in.close();
  std::filesystem::remove(path);
  uint64_t header_len;
  std::memcpy(&header_len, &good[8], sizeof(header_len));
  const nlohmann::json header = nlohmann::json::parse(good.substr(16, header_len));
  const std::string arrays = good.substr(16 + header_len, good.size() - 20 - header_len);

  // The file write_checkpoint would make of this header text and these array bytes.
  auto file = [](const std::string& text, const std::string& body) {
    std::string f("TBCKPT\0\1", 8);
    const uint64_t len = text.size();
    f.append(reinterpret_cast<const char*>(&len), sizeof(len));
    f += text + body;
    const uint32_t crc =
        uint32_t(crc32(0, reinterpret_cast<const Bytef*>(f.data()), uInt(f.size())));
    return f.append(reinterpret_cast<const char*>(&crc), sizeof(crc));
  };
  // The error of reading `bytes` as a stream said to hold `size` of them (all by default).
  auto read = [](const std::string& bytes, uint64_t size = UINT64_MAX) {
    return error_of([&] {
      std::istringstream s(bytes);
      read_checkpoint(s, size == UINT64_MAX ? bytes.size() : size, "x.tbck");
    });
  };
  ASSERT_EQ(read(file(header.dump(), arrays)), "(no error)");

  for (const char* key : {"param_count", "epochs_done", "updates"}) {
    nlohmann::json h = header;
    h[key] = 1e300;
    EXPECT_EQ(read(file(h.dump(), arrays)),
              std::string("checkpoint x.tbck: corrupt header (") + key + " is not an integer)");
  }
  nlohmann::json wraps = header;  // (3 * (2^62 + 1) + 0) * 4 bytes = 12 bytes modulo 2^64
  for (const char* key : {"params", "opt_m", "opt_v"}) wraps["arrays"][key] = (1ull << 62) + 1;
  wraps["param_count"] = (1ull << 62) + 1;
  EXPECT_NE(read(file(wraps.dump(), arrays.substr(0, 12)))
                .find("declares 4611686018427387905 parameters"),
            std::string::npos);

  // The header length is held against the file's size before the header is read: a stream said
  // to be 40 bytes long is refused there, not after reading a header it does not have.
  EXPECT_EQ(read(good, 40), "checkpoint x.tbck: truncated (in its header)");

  nlohmann::json deep = header;
  deep["hyper"] = "DEEP";
  std::string text = deep.dump();
  text.replace(text.find("\"DEEP\""), 6, std::string(100000, '[') + std::string(100000, ']'));
  EXPECT_NE(read(file(text, arrays)).find("its header is not the expected JSON"),
            std::string::npos);
}

}  // namespace tb
