// A backend that records graphs the way CUDA graphs do, on top of any other backend, so the
// The executor's graph logic is tested on the CPU. Between graph_begin and graph_end every op is
// stored with the arguments it was issued with (sizes, scalars and small structs copied; pointers
// and OpCaches kept) and runs only when graph_launch replays it. Waiting for the device, uploading
// or allocating while recording throws, as stream capture forbids them. A step that recorded an
// argument which changes from step to step (a seed, Adam's step count, a batch offset) replays a
// stale value and no longer matches the same run without graphs: such values must be read from
// device memory at run time (the executor's StepCursor).
//
// memory_cap (bytes, 0 = none) makes alloc throw OutOfMemory beyond it, as a full GPU does.
// With host_timers it also has device timers, emulated with the host clock (the inner backend
// runs each op before returning), so the executor's per-node marks are tested on the CPU.
#pragma once
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "backends/backend.h"
#include "core/error.h"
#include "ops/mlp_step.h"

namespace tb::testing {

struct Recorder {
  std::unique_ptr<Backend> inner;
  std::vector<std::function<void()>>* tape = nullptr;  // non-null while recording
  bool fail_recordings = false;                        // graph_end throws (the fallback's test)
  int recorded = 0, launched = 0;
  bool replaying = false;
  int64_t issued = 0, uploads = 0;  // ops run as issued (outside any graph); uploads
  // The array registered by Backend::set_param_array (null once let go of; the inner backend's
  // entry, if any, runs too), and its values when it was registered.
  const float* param_array = nullptr;
  int64_t param_count = -1;
  std::vector<float> param_values;
  // With fused_mlp it offers Backend::mlp_step, run by ref::mlp_step (host memory: the inner
  // backend must be the reference or the CPU one); fused counts its calls outside recordings.
  bool fused_mlp = false;
  int64_t fused = 0;
  int marks = 0;  // timer marks made
  size_t memory_cap = 0, allocated = 0;
  std::map<void*, size_t> sizes;  // what each live allocation counts against the cap
};

inline Recorder& recorder(void* ctx) {
  return *static_cast<Recorder*>(ctx);
}

// OpCaches stay references (the backend fills them in place); everything else is copied, since a
// `const ConvDims&` or `const BatchSpec&` may name a temporary of the issuing code.
template <typename T>
using Kept =
    std::conditional_t<std::is_same_v<std::remove_cvref_t<T>, OpCache>, T, std::remove_cvref_t<T>>;

template <typename Member, Member member>
struct RecordOrRun;
template <typename... A, void (*Backend::*member)(void*, A...)>
struct RecordOrRun<void (*Backend::*)(void*, A...), member> {
  static void call(void* ctx, A... a) {
    Recorder& r = recorder(ctx);
    Backend& in = *r.inner;
    if (!r.tape) {
      if (!r.replaying) r.issued++;
      return (in.*member)(in.ctx, a...);
    }
    r.tape->push_back([&in, args = std::tuple<Kept<A>...>(a...)]() mutable {
      std::apply([&in](auto&... x) { (in.*member)(in.ctx, x...); }, args);
    });
  }
};

inline void refuse_while_recording(void* ctx, const char* what) {
  if (recorder(ctx).tape) fail("recording backend: {} while recording a graph", what);
}

inline std::unique_ptr<Backend> make_recording_backend(std::unique_ptr<Backend> inner,
                                                       bool host_timers = false) {
  auto b = std::make_unique<Backend>();
  auto* r = new Recorder();
  r->inner = std::move(inner);
  b->ctx = r;
  b->destroy = [](void* p) { delete static_cast<Recorder*>(p); };
  const Backend& in = *r->inner;
  b->name = in.name + "+recorded";
  b->device = in.device;
  b->precision = in.precision;
  b->nhwc = in.nhwc;

  b->alloc = [](void* ctx, size_t bytes) {
    refuse_while_recording(ctx, "alloc");
    Recorder& r = recorder(ctx);
    const size_t counted = (bytes + 255) / 256 * 256;
    if (r.memory_cap && r.allocated + counted > r.memory_cap)
      throw OutOfMemory("recording backend: out of memory", bytes, r.memory_cap - r.allocated);
    void* p = r.inner->alloc(r.inner->ctx, bytes);
    r.allocated += counted;
    r.sizes[p] = counted;
    return p;
  };
  b->free = [](void* ctx, void* p) {
    Recorder& r = recorder(ctx);
    if (auto it = r.sizes.find(p); it != r.sizes.end()) {
      r.allocated -= it->second;
      r.sizes.erase(it);
    }
    r.inner->free(r.inner->ctx, p);
  };
  b->upload = [](void* ctx, void* dst, const void* src, size_t bytes) {
    refuse_while_recording(ctx, "upload");
    recorder(ctx).uploads++;
    Backend& in = *recorder(ctx).inner;
    in.upload(in.ctx, dst, src, bytes);
  };
  b->download = [](void* ctx, void* dst, const void* src, size_t bytes) {
    refuse_while_recording(ctx, "download");
    Backend& in = *recorder(ctx).inner;
    in.download(in.ctx, dst, src, bytes);
  };
  b->synchronize = [](void* ctx) {
    refuse_while_recording(ctx, "synchronize");
    Backend& in = *recorder(ctx).inner;
    in.synchronize(in.ctx);
  };

  b->set_param_array = [](void* ctx, const float* params, int64_t count) {
    refuse_while_recording(ctx, "set_param_array");
    Recorder& r = recorder(ctx);
    if (r.inner->set_param_array) r.inner->set_param_array(r.inner->ctx, params, count);
    if (count <= 0 && params != r.param_array) return;  // not (or no longer) the array registered
    const bool release = count <= 0;
    r.param_array = release ? nullptr : params, r.param_count = release ? 0 : count;
    r.param_values.assign(size_t(r.param_count), 0.f);
    if (!release)
      r.inner->download(r.inner->ctx, r.param_values.data(), params, size_t(count) * sizeof(float));
  };

  b->mlp_step = [](void* ctx, const MlpStep& s) {
    Recorder& r = recorder(ctx);
    if (!r.fused_mlp) return false;
    if (r.tape) {
      r.tape->push_back([s]() { ref::mlp_step(s); });
      return true;
    }
    if (!r.replaying) r.issued++;
    r.fused++;
    ref::mlp_step(s);
    return true;
  };

#define TB_RECORD_OR_RUN(m) \
  if (in.m) b->m = RecordOrRun<decltype(&Backend::m), &Backend::m>::call
  TB_RECORD_OR_RUN(copy);
  TB_RECORD_OR_RUN(fill);
  TB_RECORD_OR_RUN(gather_batch);
  TB_RECORD_OR_RUN(dense_forward);
  TB_RECORD_OR_RUN(dense_backward);
  TB_RECORD_OR_RUN(relu_forward);
  TB_RECORD_OR_RUN(relu_backward);
  TB_RECORD_OR_RUN(add);
  TB_RECORD_OR_RUN(softmax_ce);
  TB_RECORD_OR_RUN(conv2d_forward);
  TB_RECORD_OR_RUN(conv2d_backward_data);
  TB_RECORD_OR_RUN(conv2d_backward_weights);
  TB_RECORD_OR_RUN(batchnorm_forward_train);
  TB_RECORD_OR_RUN(batchnorm_forward_eval);
  TB_RECORD_OR_RUN(batchnorm_backward);
  TB_RECORD_OR_RUN(batchnorm_relu_forward_train);
  TB_RECORD_OR_RUN(batchnorm_relu_forward_eval);
  TB_RECORD_OR_RUN(batchnorm_relu_backward);
  TB_RECORD_OR_RUN(batchnorm_add_relu_forward_train);
  TB_RECORD_OR_RUN(batchnorm_add_relu_forward_eval);
  TB_RECORD_OR_RUN(maxpool_forward);
  TB_RECORD_OR_RUN(maxpool_backward);
  TB_RECORD_OR_RUN(global_avgpool_forward);
  TB_RECORD_OR_RUN(global_avgpool_backward);
  TB_RECORD_OR_RUN(adam_update);
  TB_RECORD_OR_RUN(sgd_update);
  TB_RECORD_OR_RUN(advance_cursor);
#undef TB_RECORD_OR_RUN

  using Tape = std::vector<std::function<void()>>;
  b->graph_begin = [](void* ctx) {
    Recorder& r = recorder(ctx);
    if (r.tape) fail("recording backend: graph_begin while recording");
    r.tape = new Tape();
  };
  b->graph_end = [](void* ctx) -> void* {
    Recorder& r = recorder(ctx);
    std::unique_ptr<Tape> tape(r.tape);
    r.tape = nullptr;
    if (!tape) fail("recording backend: graph_end without graph_begin");
    if (r.fail_recordings) fail("recording backend: this recording was made to fail");
    r.recorded++;
    return tape.release();
  };
  b->graph_launch = [](void* ctx, void* g) {
    refuse_while_recording(ctx, "graph_launch");
    Recorder& r = recorder(ctx);
    r.launched++;
    r.replaying = true;
    for (auto& op : *static_cast<Tape*>(g)) op();
    r.replaying = false;
  };
  b->graph_destroy = [](void*, void* g) { delete static_cast<Tape*>(g); };

  if (host_timers) {
    using Marks = std::vector<std::chrono::steady_clock::time_point>;
    b->timers_create = [](void*, int count) -> void* { return new Marks(size_t(count)); };
    b->timers_start = [](void*, void*) {};
    b->timer_mark = [](void* ctx, void* t, int i) {
      refuse_while_recording(ctx, "timer_mark");
      static_cast<Marks*>(t)->at(size_t(i)) = std::chrono::steady_clock::now();
      recorder(ctx).marks++;
    };
    b->timers_read = [](void*, void* t, int count, float* ms) {
      const Marks& m = *static_cast<Marks*>(t);
      for (int i = 0; i < count; ++i)
        ms[i] = std::chrono::duration<float, std::milli>(m.at(size_t(i)) - m[0]).count();
      return true;  // no gate: the host runs each op before returning
    };
    b->timers_destroy = [](void*, void* t) { delete static_cast<Marks*>(t); };
  }
  return b;
}

}  // namespace tb::testing
