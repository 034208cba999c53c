#include "train/runner.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <numeric>
#include <random>
#include <sstream>

#include "comm/comm.h"
#include "core/dtype.h"
#include "core/error.h"
#include "train/checkpoint.h"

namespace tb {

using Clock = std::chrono::steady_clock;
static double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Where a diverged run went wrong first: the first node in forward order whose output in the
// last step (n images; its forward ran on the weights before that step's update) holds a value
// that is not finite, else the first whose parameters do not. One download each, once.
static std::string first_nonfinite_layer(const Executor& ex, int64_t n) {
  const Model& m = ex.model();
  const Backend& be = ex.backend();
  auto finite = [](const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
  };
  std::vector<float> values;
  std::vector<uint16_t> halves;  // a map the plan keeps in bf16
  for (size_t i = 1; i < m.nodes.size(); ++i) {
    if (!ex.buffers().out[i]) continue;  // fused away: its step's output is a later node's
    const size_t count = size_t(n * m.nodes[i].out_size());
    if (ex.plan().out_bf16[i]) {
      halves.resize(count);
      be.download(be.ctx, halves.data(), ex.buffers().out[i], count * sizeof(uint16_t));
      if (std::any_of(halves.begin(), halves.end(),
                      [](uint16_t h) { return !std::isfinite(bf16_to_f32(h)); }))
        return m.nodes[i].name;
      continue;
    }
    values.resize(count);
    be.download(be.ctx, values.data(), ex.buffers().out[i], count * sizeof(float));
    if (!finite(values)) return m.nodes[i].name;
  }
  for (const Node& node : m.nodes) {
    if (node.param_offset < 0) continue;
    values.resize(size_t(node.param_count));
    be.download(be.ctx, values.data(), ex.buffers().params + node.param_offset,
                values.size() * sizeof(float));
    if (!finite(values)) return node.name;
  }
  return "";
}

TrainResult train(Executor& ex, const std::function<void(const Progress&)>& on_progress,
                  const CheckpointPlan& checkpoints, const std::atomic<bool>* stop) {
  TB_CHECK(ex.trains(), "train: this executor was made for test passes only");
  const Hyper& hp = ex.hyper();
  const int64_t train_count = ex.train_count();
  TrainResult r;
  std::mt19937_64 shuffle_rng(hp.seed ^ 0x5eedull);
  const int64_t steps_per_epoch = (train_count + hp.batch - 1) / hp.batch;
  int first_epoch = 1;
  EpochSoFar so_far;  // of first_epoch, where a checkpoint stopped inside it
  if (checkpoints.resume) {
    const Checkpoint& c = *checkpoints.resume;
    restore_checkpoint(ex, c, checkpoints.resume_path);
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
  // Every rank steps from rank 0's weights (its seed's, its --init's or its checkpoint's).
  ex.broadcast_state();
  Comm* comm = ex.comm();
  // The epoch's loss and correct sums over all ranks (each sums its own shards).
  auto all_sums = [&] {
    std::array<float, 2> s = ex.train_sums();
    if (!comm) return s;
    double both[2] = {s[0], s[1]};
    comm->sum(both, 2);
    return std::array<float, 2>{float(both[0]), float(both[1])};
  };
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
  // The loss is checked where the device's running sums are read: after every step on the CPU
  // (a copy of two floats), else at every report, sampled step, loss sample, checkpoint and
  // epoch end, since reading them waits for the device.
  // Over several ranks only where all have the same sums (an epoch's end): a rank that stopped
  // alone would leave the others waiting.
  const bool one_rank = ex.ranks() == 1;
  const bool check_every_step = one_rank && ex.backend().device == DeviceKind::cpu;
  const int64_t loss_period = std::max<int64_t>(1, planned / 200);
  Clock::time_point t_warm{};
  int64_t images_at_warm = 0;
  // Test hook (tests/cli/faults_test.cpp): a kill -9 once the run's step N (a checkpoint's steps
  // counted) has trained.
  const char* kill_after = std::getenv("TRAINBENCH_TEST_KILL_AFTER_STEP");
  const int64_t kill_after_step = kill_after ? std::atoll(kill_after) : -1;

  int64_t last_n = 0;  // the last step's images
  std::vector<int32_t> perm(train_count);
  std::iota(perm.begin(), perm.end(), 0);
  ex.synchronize();
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
    const bool written = checkpoints.write(capture_checkpoint(ex, r, rng_state, part));
    last_checkpoint = Clock::now();
    const double s = seconds_since(t0);
    r.checkpoints += written, r.checkpoint_seconds += s;
    if (r.steps >= warm_steps) paused_after_warm_s += s;
    return s;
  };

  for (int epoch = first_epoch;
       epoch <= hp.epochs && r.steps < planned && !r.interrupted && !r.diverged; ++epoch) {
    // The permutation is the epoch's whatever the epochs before it ran in this process or in
    // the run a checkpoint came from: it restarts from the identity and the generator's state.
    // For a checkpoint inside this epoch: the resumed run shuffles it again.
    const std::string rng_at_start = checkpoints.write ? rng_text() : std::string();
    std::iota(perm.begin(), perm.end(), 0);
    const auto t_epoch = Clock::now();
    std::shuffle(perm.begin(), perm.end(), shuffle_rng);
    // A checkpoint cut inside this epoch: on from its step, its sums and time.
    const EpochSoFar before = epoch == first_epoch ? so_far : EpochSoFar{};
    // The sums so far are the ranks' total: rank 0 carries them on.
    if (ex.rank() == 0)
      ex.begin_epoch(epoch, perm, before.steps, before.loss_sum, before.correct);
    else
      ex.begin_epoch(epoch, perm, before.steps);
    EpochResult e;
    e.steps = before.steps, e.images = before.images;
    double paused_in_epoch = 0;  // its checkpoints' time: not the epoch's
    auto epoch_seconds = [&] { return before.seconds + seconds_since(t_epoch) - paused_in_epoch; };
    // A checkpoint of the epoch as it stands: its seconds so far, the device's loss and correct
    // sums.
    auto save_inside = [&](double seconds, const float* sums_now) {
      paused_in_epoch += save(rng_at_start, {e.steps, e.images, seconds, sums_now[0], sums_now[1]});
    };
    // A non-finite running loss sum: a step's loss was not finite (NaN and inf stay in a sum).
    auto diverges = [&](const std::array<float, 2>& sums) {
      if (std::isfinite(sums[0]) || r.diverged) return r.diverged;
      r.diverged = true, r.diverged_step = steps_before + r.steps, r.diverged_epoch = epoch;
      r.diverged_step_exact = check_every_step;
      return true;
    };
    auto last_report = Clock::now();
    float loss_sum_at = before.loss_sum;  // the running loss sum at the last loss sample
    int64_t images_at = before.images;
    auto sample_loss = [&](float loss_sum) {
      if (e.images == images_at) return;
      r.loss_samples.emplace_back(epoch - 1 + double(e.steps) / double(steps_per_epoch),
                                  (loss_sum - loss_sum_at) / double(e.images - images_at));
      loss_sum_at = loss_sum, images_at = e.images;
    };
    // Inside an epoch: this rank's sums as an estimate of all (no collective at a time the
    // ranks do not share); at its end, all ranks' sums.
    auto report = [&](bool epoch_done, std::array<float, 2> host) {
      if (!on_progress) return;
      if (!epoch_done) host = ex.train_sums(), host[0] *= ex.ranks(), host[1] *= ex.ranks();
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
      // Stop, and a checkpoint due inside the epoch: decided by time or a signal, so on several
      // ranks any rank's decision is every rank's, at the same step.
      enum : int { kStop = 1, kSave = 2 };
      int flags = (stop && stop->load(std::memory_order_relaxed)) ? kStop : 0;
      if (periodic && e.steps > before.steps &&
          seconds_since(last_checkpoint) >= checkpoints.every_s)
        flags |= kSave;
      if (comm) flags = comm->any(flags);
      if (flags & kSave) {
        const std::array<float, 2> sums_now = all_sums();  // synchronizes: the step's time
        if (diverges(sums_now)) break;                     // every rank sees the same sums
        save_inside(epoch_seconds(), sums_now.data());
      }
      if (flags & kStop) {
        r.interrupted = true;
        break;
      }
      const int64_t n = std::min<int64_t>(hp.batch, train_count - s * hp.batch);
      last_n = n;
      if (r.steps % period == 0 && r.steps > 0) {
        // Host overhead: issue the step without synchronizing, then wait for the device.
        ex.synchronize();
        const auto t0 = Clock::now();
        ex.step(n, nullptr);
        const auto t_issued = Clock::now();
        ex.synchronize();
        r.split.host_ms += std::chrono::duration<double, std::milli>(t_issued - t0).count();
        r.split.whole_ms += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        r.split.host_samples++;
      } else {
        ex.step(n, (r.steps % period == period / 2) ? &r.split : nullptr);
      }
      e.steps++, e.images += n, r.steps++, r.images += n;
      if (steps_before + r.steps == kill_after_step) std::raise(SIGKILL);
      if (r.steps == warm_steps) {
        ex.synchronize();
        t_warm = Clock::now(), images_at_warm = r.images;
      }
      const bool sample = r.steps % loss_period == 0 && e.steps < steps_per_epoch;
      if (sample || check_every_step || (one_rank && r.steps % period == 0)) {
        const std::array<float, 2> sums = ex.train_sums();  // synchronizes off the CPU
        if (one_rank && diverges(sums)) break;
        if (sample) sample_loss(sums[0]);  // every 1/200 of the run
      }
      if (on_progress && seconds_since(last_report) > 0.1) report(false, {});
    }
    if (e.steps == before.steps) break;  // stopped before this run's first step of the epoch
    const std::array<float, 2> host = all_sums();  // synchronizes
    e.seconds = epoch_seconds();
    if (!diverges(host)) sample_loss(host[0]);
    // Stopped inside the epoch (Ctrl-C, --steps): the checkpoint holds it as it stands.
    if (checkpoints.write && e.steps < steps_per_epoch && !r.diverged)
      save_inside(e.seconds, host.data());
    e.loss = host[0] / double(e.images);
    e.accuracy = host[1] / double(e.images);
    r.epochs.push_back(e);
    report(true, host);
    if (r.diverged) break;
    // The generator's state after this shuffle is the next epoch's before its own.
    if (checkpoints.write && e.steps == steps_per_epoch) save(rng_text(), {});
  }
  if (r.diverged) r.diverged_layer = first_nonfinite_layer(ex, last_n);
  ex.synchronize();
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
        r.split.optimizer_ms *= k, r.split.exchange_ms *= k;
  }
  if (r.split.host_samples) {
    r.split.host_ms /= r.split.host_samples;
    r.split.whole_ms /= r.split.host_samples;
  }
  return r;
}

}  // namespace tb
