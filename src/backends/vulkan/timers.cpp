// Device timers for profiles, from timestamp queries. Ops are recorded and submitted only at a
// synchronize, a download or every kDispatchesPerSubmit dispatches, so the pass between
// timers_start and timers_read runs back to back as the device runs it, not at the host's pace:
// the gate CUDA needs a kernel for is how this backend works anyway.
#include <cstdint>
#include <vector>

#include "backends/vulkan/vulkan_context.h"
#include "core/error.h"

namespace tb::vulkan {
namespace {

struct Timers {
  VkQueryPool pool = VK_NULL_HANDLE;
  int count = 0;
};

void timers_destroy(void* ctx, void* p) {
  auto* t = static_cast<Timers*>(p);
  if (!t) return;
  Context& cx = context(ctx);
  vkQueueWaitIdle(cx.queue);  // a pass that threw may still write its marks
  if (t->pool) vkDestroyQueryPool(cx.device, t->pool, nullptr);
  delete t;
}

void* timers_create(void* ctx, int count) {
  Context& cx = context(ctx);
  if (count < 1) fail("vulkan timers_create: needs at least one mark, not {}", count);
  auto* t = new Timers();
  t->count = count;
  auto qi = make<VkQueryPoolCreateInfo>(VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO);
  qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
  qi.queryCount = uint32_t(count);
  const VkResult r = vkCreateQueryPool(cx.device, &qi, nullptr, &t->pool);
  if (r != VK_SUCCESS) {
    delete t;
    fail_vk(r, "vkCreateQueryPool", "timers_create", __FILE__, __LINE__);
  }
  return t;
}

void timers_start(void* ctx, void* p) {
  Context& cx = context(ctx);
  auto* t = static_cast<Timers*>(p);
  flush(cx, false);  // what came before runs apart from the pass
  vkCmdResetQueryPool(record(cx), t->pool, 0, uint32_t(t->count));
}

void timer_mark(void* ctx, void* p, int i) {
  Context& cx = context(ctx);
  auto* t = static_cast<Timers*>(p);
  if (i < 0 || i >= t->count) fail("vulkan timer_mark: mark {} of {}", i, t->count);
  // After the barrier record() puts first: the mark waits for everything issued before it.
  vkCmdWriteTimestamp(record(cx), VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, t->pool, uint32_t(i));
}

bool timers_read(void* ctx, void* p, int count, float* ms) {
  Context& cx = context(ctx);
  auto* t = static_cast<Timers*>(p);
  if (count < 1 || count > t->count) fail("vulkan timers_read: {} marks of {}", count, t->count);
  flush(cx, true);
  std::vector<uint64_t> ticks(size_t(count), 0);
  TB_VK_CHECK(vkGetQueryPoolResults(cx.device, t->pool, 0, uint32_t(count),
                                    ticks.size() * sizeof(uint64_t), ticks.data(), sizeof(uint64_t),
                                    VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT),
              "timers_read");
  for (int i = 0; i < count; ++i)
    ms[i] = float(double(ticks[size_t(i)] - ticks[0]) * cx.timestamp_period_ns * 1e-6);
  return true;
}

}  // namespace

void register_timers(Backend& b) {
  b.timers_create = timers_create;
  b.timers_start = timers_start;
  b.timer_mark = timer_mark;
  b.timers_read = timers_read;
  b.timers_destroy = timers_destroy;
}

}  // namespace tb::vulkan
