// A checkpoint's arrays to and from an executor's device buffers.
#include <array>

#include "core/error.h"
#include "train/checkpoint.h"

namespace tb {

namespace {

// The device arrays a checkpoint holds, each with its host copy in c (const or not) and length.
template <class C>
auto checkpoint_arrays(const Executor& ex, C& c) {
  struct Array {
    decltype(&c.params) host;
    float* device;
    int64_t count;
  };
  const DeviceBuffers& b = ex.buffers();
  const int64_t P = ex.model().param_count;
  return std::array<Array, 4>{{{&c.params, b.params, P},
                               {&c.opt_m, b.opt_m, P},
                               {&c.opt_v, b.opt_v, P},
                               {&c.state, b.state, ex.model().state_count}}};
}

void check_model_fits(const Checkpoint& c, const std::string& path, const Model& model,
                      const Hyper& hp) {
  TB_CHECK(c.workload == hp.workload, "checkpoint {} is of workload {}, not {}", path, c.workload,
           hp.workload);
  TB_CHECK(c.param_count == model.param_count && c.state_count == model.state_count,
           "checkpoint {} holds a model of {} parameters and {} statistics; this one has {} and {}",
           path, c.param_count, c.state_count, model.param_count, model.state_count);
}

}  // namespace

Checkpoint capture_checkpoint(const Executor& ex, const TrainResult& r,
                              const std::string& shuffle_rng, const EpochSoFar& so_far) {
  TB_CHECK(ex.trains(), "checkpoint: this executor was made for test passes only");
  const Backend& be = ex.backend();
  Checkpoint c;
  c.workload = ex.hyper().workload;
  c.param_count = ex.model().param_count, c.state_count = ex.model().state_count;
  c.train_count = ex.train_count();
  c.hyper = hyper_json(ex.hyper());
  c.device = be.name;
  c.epochs_done = int(r.epochs.size());
  c.shuffle_rng = shuffle_rng;
  c.epochs = r.epochs;
  c.epoch_so_far = so_far;
  for (auto [host, device, count] : checkpoint_arrays(ex, c)) {
    host->resize(size_t(count));
    if (count) be.download(be.ctx, host->data(), device, size_t(count) * sizeof(float));
  }
  be.download(be.ctx, &c.updates, &ex.buffers().cursor->updates, sizeof(c.updates));
  return c;
}

void restore_checkpoint(Executor& ex, const Checkpoint& c, const std::string& path) {
  TB_CHECK(ex.trains(), "restore: this executor was made for test passes only");
  check_resumable(c, path, ex.hyper());
  check_model_fits(c, path, ex.model(), ex.hyper());
  TB_CHECK(c.train_count == ex.train_count(),
           "checkpoint {} was trained on {} images; this data set has {} (resume on the same)",
           path, c.train_count, ex.train_count());
  Backend& be = ex.backend();
  for (auto [host, device, count] : checkpoint_arrays(ex, c))
    if (count) be.upload(be.ctx, device, host->data(), size_t(count) * sizeof(float));
  be.upload(be.ctx, &ex.buffers().cursor->updates, &c.updates, sizeof(c.updates));
  be.synchronize(be.ctx);
}

void load_model(Executor& ex, const Checkpoint& c, const std::string& path) {
  check_model_fits(c, path, ex.model(), ex.hyper());
  Backend& be = ex.backend();
  const auto arrays = checkpoint_arrays(ex, c);
  for (const auto& [host, device, count] : {arrays[0], arrays[3]})  // parameters, BN statistics
    if (count) be.upload(be.ctx, device, host->data(), size_t(count) * sizeof(float));
  be.synchronize(be.ctx);
}

}  // namespace tb
