// Device timers for profiles: CUDA events recorded in stream order between the nodes of a pass,
// behind a gate kernel that holds the stream until the host has issued the whole pass. Without
// the gate, a pass of short ops runs at the pace of the host's launches and each node would be
// timed at its launch cost; behind it, the queued ops run back to back and the events time the
// device alone (nvbench's blocking kernel does the same).
#include <atomic>
#include <cstdint>
#include <vector>

#include "backends/cuda/cuda_context.h"

namespace tb::cuda {
namespace {

// The gate gives up after this long: the host may block on a full launch queue before it can
// open the gate, and then the pass runs at the host's pace rather than never.
constexpr uint64_t kGateTimeoutNs = 200'000'000;

__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// open[0]: set by the host to let the stream go on; open[1]: set here when the timeout did.
__global__ void gate_kernel(volatile int32_t* open, uint64_t timeout_ns) {
  const uint64_t t0 = global_ns();
  while (open[0] == 0)
    if (global_ns() - t0 >= timeout_ns) {
      open[1] = 1;
      return;
    } else {
      __nanosleep(1000);
    }
}

struct Timers {
  std::vector<cudaEvent_t> events;
  bool gated = false;  // a pass started and not read (it threw): its gate may still poll
  // Pinned and mapped, two flags: [0] the host opens the gate, [1] the gate timed out.
  int32_t* gate_host = nullptr;
  int32_t* gate_dev = nullptr;
};

void timers_destroy(void* ctx, void* p) {
  auto* t = static_cast<Timers*>(p);
  if (!t) return;
  if (t->gated) {  // a pass that threw: its gate may still poll the flags freed below
    t->gate_host[0] = 1;
    (void)cudaStreamSynchronize(context(ctx).stream);
  }
  for (cudaEvent_t e : t->events)
    if (e) cudaEventDestroy(e);
  if (t->gate_host) cudaFreeHost(t->gate_host);
  (void)cudaGetLastError();
  delete t;
}

void* timers_create(void* ctx, int count) {
  (void)ctx;
  const char* op = "timers_create";
  auto* t = new Timers();
  try {
    if (count < 1) fail_msg(op, count_str(count), "needs at least one mark");
    t->events.assign(size_t(count), nullptr);
    for (cudaEvent_t& e : t->events) TB_CUDA_CHECK(cudaEventCreate(&e), op, count_str(count));
    TB_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&t->gate_host), 2 * sizeof(int32_t),
                                cudaHostAllocMapped),
                  op, count_str(count));
    t->gate_host[0] = 1, t->gate_host[1] = 0;
    TB_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&t->gate_dev), t->gate_host, 0),
                  op, count_str(count));
  } catch (...) {
    timers_destroy(ctx, t);
    throw;
  }
  return t;
}

void timers_start(void* ctx, void* p) {
  Context& cx = context(ctx);
  auto* t = static_cast<Timers*>(p);
  // The previous pass's read waited for its last mark, so no gate kernel still polls the flag;
  // one that was never read is opened and waited for.
  volatile int32_t* gate = t->gate_host;
  if (t->gated) {
    gate[0] = 1;
    TB_CUDA_CHECK(cudaStreamSynchronize(cx.stream), "timers_start", std::string("(gate)"));
  }
  t->gated = true;
  gate[0] = 0;
  gate[1] = 0;
  gate_kernel<<<1, 1, 0, cx.stream>>>(t->gate_dev, kGateTimeoutNs);
  TB_CUDA_LAUNCH_CHECK("timers_start", std::string("(gate)"));
}

void timer_mark(void* ctx, void* p, int i) {
  Context& cx = context(ctx);
  auto* t = static_cast<Timers*>(p);
  if (i < 0 || size_t(i) >= t->events.size())
    fail_msg("timer_mark", count_str(i), "mark out of range");
  TB_CUDA_CHECK(cudaEventRecord(t->events[size_t(i)], cx.stream), "timer_mark", count_str(i));
}

bool timers_read(void* ctx, void* p, int count, float* ms) {
  (void)ctx;
  auto* t = static_cast<Timers*>(p);
  const char* op = "timers_read";
  if (count < 1 || size_t(count) > t->events.size())
    fail_msg(op, count_str(count), "mark count out of range");
  std::atomic_thread_fence(std::memory_order_seq_cst);
  volatile int32_t* gate = t->gate_host;
  gate[0] = 1;  // open the gate
  t->gated = false;
  TB_CUDA_CHECK(cudaEventSynchronize(t->events[size_t(count - 1)]), op, count_str(count));
  ms[0] = 0.f;
  for (int i = 1; i < count; ++i)
    TB_CUDA_CHECK(cudaEventElapsedTime(&ms[i], t->events[0], t->events[size_t(i)]), op,
                  count_str(i));
  return gate[1] == 0;  // the last mark is done, so is the gate kernel
}

}  // namespace

void register_timers(Backend& b) {
  b.timers_create = timers_create;
  b.timers_start = timers_start;
  b.timer_mark = timer_mark;
  b.timers_read = timers_read;
  b.timers_destroy = timers_destroy;
}

}  // namespace tb::cuda
