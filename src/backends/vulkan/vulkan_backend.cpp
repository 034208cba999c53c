// The Vulkan backend: opening a device (devices.cpp finds and checks it), memory (buffer device
// addresses, vulkan_context.h says why), recording and submitting command buffers, graphs, and
// the table every op file fills.
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backends/backend.h"
#include "backends/vulkan/shaders.h"
#include "backends/vulkan/vulkan_context.h"
#include "core/error.h"

namespace tb::vulkan {

void choose_memory(Context& cx) {
  VkPhysicalDeviceMemoryProperties mp{};
  vkGetPhysicalDeviceMemoryProperties(cx.physical, &mp);
  int64_t best_heap = -1;
  for (uint32_t h = 0; h < mp.memoryHeapCount; ++h)
    if ((mp.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
        (best_heap < 0 || mp.memoryHeaps[h].size > mp.memoryHeaps[best_heap].size))
      best_heap = h;
  if (best_heap < 0) best_heap = 0;
  const VkMemoryPropertyFlags mapped = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                                       VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                       VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  int64_t device_type = -1, mapped_type = -1;
  for (uint32_t t = 0; t < mp.memoryTypeCount; ++t) {
    if (mp.memoryTypes[t].heapIndex != uint32_t(best_heap)) continue;
    const VkMemoryPropertyFlags fl = mp.memoryTypes[t].propertyFlags;
    if (mapped_type < 0 && (fl & mapped) == mapped) mapped_type = t;
    if (device_type < 0 && (fl & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT)) device_type = t;
  }
  if (mapped_type < 0 && device_type < 0) fail("vulkan init: no device-local memory type");
  cx.unified = mapped_type >= 0;
  cx.memory_type = uint32_t(cx.unified ? mapped_type : device_type);
  cx.heap_bytes = mp.memoryHeaps[best_heap].size;
}

namespace {

// A host-visible, coherent type for the staging buffer (where buffers are not mapped).
uint32_t staging_type(Context& cx) {
  VkPhysicalDeviceMemoryProperties mp{};
  vkGetPhysicalDeviceMemoryProperties(cx.physical, &mp);
  const VkMemoryPropertyFlags want =
      VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  for (uint32_t t = 0; t < mp.memoryTypeCount; ++t)
    if ((mp.memoryTypes[t].propertyFlags & want) == want) return t;
  fail("vulkan init: no host-visible memory type for staging");
}

Buffer make_buffer(Context& cx, size_t bytes, uint32_t type, bool map, const char* op) {
  Buffer b;
  b.bytes = bytes;
  auto bi = make<VkBufferCreateInfo>(VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO);
  bi.size = bytes;
  bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
             VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT;
  bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  TB_VK_CHECK(vkCreateBuffer(cx.device, &bi, nullptr, &b.buffer), op);
  VkMemoryRequirements req{};
  vkGetBufferMemoryRequirements(cx.device, b.buffer, &req);
  auto flags = make<VkMemoryAllocateFlagsInfo>(VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO);
  flags.flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
  auto ai = make<VkMemoryAllocateInfo>(VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO);
  ai.pNext = &flags;
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = type;
  const VkResult r = (req.memoryTypeBits & (1u << type))
                         ? vkAllocateMemory(cx.device, &ai, nullptr, &b.memory)
                         : VK_ERROR_FEATURE_NOT_PRESENT;
  if (r != VK_SUCCESS) {
    vkDestroyBuffer(cx.device, b.buffer, nullptr);
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY) {
      const size_t free_b =
          cx.heap_bytes > cx.allocated_bytes ? size_t(cx.heap_bytes - cx.allocated_bytes) : 1;
      throw OutOfMemory(
          fmt::format("vulkan: out of device memory on {}: asked for {} bytes ({:.1f} MiB), about "
                      "{:.1f} MiB free of {:.1f} MiB ({}); try a smaller --batch",
                      cx.device_name, bytes, bytes / 1048576.0, free_b / 1048576.0,
                      cx.heap_bytes / 1048576.0, result_name(r)),
          bytes, free_b);
    }
    fail_vk(r, "vkAllocateMemory", op, __FILE__, __LINE__);
  }
  TB_VK_CHECK(vkBindBufferMemory(cx.device, b.buffer, b.memory, 0), op);
  if (map) {
    void* p = nullptr;
    TB_VK_CHECK(vkMapMemory(cx.device, b.memory, 0, VK_WHOLE_SIZE, 0, &p), op);
    b.mapped = static_cast<uint8_t*>(p);
  }
  auto di = make<VkBufferDeviceAddressInfo>(VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO);
  di.buffer = b.buffer;
  b.address = vkGetBufferDeviceAddress(cx.device, &di);
  cx.allocated_bytes += req.size;
  return b;
}

void destroy_buffer(Context& cx, Buffer& b) {
  if (b.buffer) vkDestroyBuffer(cx.device, b.buffer, nullptr);
  if (b.memory) vkFreeMemory(cx.device, b.memory, nullptr);  // unmaps too
  cx.allocated_bytes -= std::min<VkDeviceSize>(cx.allocated_bytes, b.bytes);
  b = Buffer{};
}

void barrier(VkCommandBuffer cmd, VkPipelineStageFlags dst_stage, VkAccessFlags dst_access) {
  auto mb = make<VkMemoryBarrier>(VK_STRUCTURE_TYPE_MEMORY_BARRIER);
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = dst_access;
  vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                       dst_stage, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

VkCommandBuffer new_command_buffer(Context& cx, VkCommandBufferUsageFlags usage) {
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  if (!cx.spare_cmds.empty()) {
    cmd = cx.spare_cmds.back();
    cx.spare_cmds.pop_back();
  } else {
    auto ai = make<VkCommandBufferAllocateInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO);
    ai.commandPool = cx.pool;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    TB_VK_CHECK(vkAllocateCommandBuffers(cx.device, &ai, &cmd), "record");
  }
  auto bi = make<VkCommandBufferBeginInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO);
  bi.flags = usage;
  TB_VK_CHECK(vkBeginCommandBuffer(cmd, &bi), "record");
  return cmd;
}

// Submits cmd (null: none, only a fence) behind everything submitted before, with a fence that
// the in-flight list keeps; graph command buffers are not recycled (recycle false).
void submit(Context& cx, VkCommandBuffer cmd, bool recycle) {
  VkFence fence = VK_NULL_HANDLE;
  if (!cx.spare_fences.empty()) {
    fence = cx.spare_fences.back();
    cx.spare_fences.pop_back();
  } else {
    auto fi = make<VkFenceCreateInfo>(VK_STRUCTURE_TYPE_FENCE_CREATE_INFO);
    TB_VK_CHECK(vkCreateFence(cx.device, &fi, nullptr, &fence), "submit");
  }
  auto si = make<VkSubmitInfo>(VK_STRUCTURE_TYPE_SUBMIT_INFO);
  si.commandBufferCount = cmd ? 1 : 0;
  si.pCommandBuffers = &cmd;
  const VkResult r = vkQueueSubmit(cx.queue, 1, &si, fence);
  if (r != VK_SUCCESS) {
    cx.spare_fences.push_back(fence);
    fail_vk(r, "vkQueueSubmit", "submit", __FILE__, __LINE__);
  }
  cx.in_flight.push_back({recycle ? cmd : VK_NULL_HANDLE, fence});
}

// Waits for the oldest submission and takes its command buffer and fence back.
void retire_oldest(Context& cx) {
  Submitted s = cx.in_flight.front();
  cx.in_flight.pop_front();
  const VkResult r = vkWaitForFences(cx.device, 1, &s.fence, VK_TRUE, UINT64_MAX);
  vkResetFences(cx.device, 1, &s.fence);
  cx.spare_fences.push_back(s.fence);
  if (s.cmd) {
    vkResetCommandBuffer(s.cmd, 0);
    cx.spare_cmds.push_back(s.cmd);
  }
  if (r != VK_SUCCESS) fail_vk(r, "vkWaitForFences", "synchronize", __FILE__, __LINE__);
}

bool idle(const Context& cx) {
  return !cx.open && cx.in_flight.empty();
}

}  // namespace

VkCommandBuffer record(Context& cx) {
  if (cx.graph) {
    barrier(cx.graph, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                VK_ACCESS_TRANSFER_WRITE_BIT);
    return cx.graph;
  }
  if (!cx.open) {
    cx.open = new_command_buffer(cx, VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT);
    cx.open_dispatches = 0;
  }
  barrier(cx.open, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
          VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
              VK_ACCESS_TRANSFER_WRITE_BIT);
  return cx.open;
}

void flush(Context& cx, bool wait) {
  if (cx.open) {
    VkCommandBuffer cmd = cx.open;
    cx.open = VK_NULL_HANDLE;
    barrier(cmd, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);  // downloads read it
    TB_VK_CHECK(vkEndCommandBuffer(cmd), "submit");
    submit(cx, cmd, true);
  }
  // A long run without synchronizes keeps a few submissions in flight, not thousands.
  while (!cx.in_flight.empty() && (wait || cx.in_flight.size() > 8)) retire_oldest(cx);
}

const Buffer& buffer_at(Context& cx, const void* p, VkDeviceSize* offset, const char* op) {
  const uint64_t a = addr(p);
  auto it = cx.buffers.upper_bound(a);
  if (it == cx.buffers.begin() || a >= std::prev(it)->second.address + std::prev(it)->second.bytes)
    fail("vulkan {}: pointer {:#x} is not in a buffer of this backend", op, a);
  --it;
  *offset = a - it->second.address;
  return it->second;
}

Pipeline& pipeline(Context& cx, const char* name, uint32_t pc_bytes) {
  auto it = cx.pipelines.find(std::string_view(name));  // no string made per dispatch
  if (it != cx.pipelines.end()) return it->second;
  const Spirv* spv = find_shader(name);
  if (!spv) fail("vulkan: no shader named {} in this build", name);
  Pipeline p;
  auto mi = make<VkShaderModuleCreateInfo>(VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO);
  mi.codeSize = spv->bytes;
  mi.pCode = spv->words;
  VkShaderModule module = VK_NULL_HANDLE;
  TB_VK_CHECK(vkCreateShaderModule(cx.device, &mi, nullptr, &module), name);
  VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, pc_bytes};
  auto li = make<VkPipelineLayoutCreateInfo>(VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO);
  li.pushConstantRangeCount = 1;
  li.pPushConstantRanges = &range;
  VkResult r = vkCreatePipelineLayout(cx.device, &li, nullptr, &p.layout);
  if (r == VK_SUCCESS) {
    auto ci = make<VkComputePipelineCreateInfo>(VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO);
    ci.stage = make<decltype(ci.stage)>(VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO);
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = module;
    ci.stage.pName = "main";
    ci.layout = p.layout;
    r = vkCreateComputePipelines(cx.device, VK_NULL_HANDLE, 1, &ci, nullptr, &p.pipeline);
  }
  vkDestroyShaderModule(cx.device, module, nullptr);
  if (r != VK_SUCCESS) {
    if (p.layout) vkDestroyPipelineLayout(cx.device, p.layout, nullptr);
    fail_vk(r, "creating the pipeline", name, __FILE__, __LINE__);
  }
  return cx.pipelines.emplace(name, p).first->second;
}

void dispatch_raw(Context& cx, const char* name, const void* pc, uint32_t pc_bytes, uint32_t gx,
                  uint32_t gy, uint32_t gz) {
  Pipeline& p = pipeline(cx, name, pc_bytes);
  VkCommandBuffer cmd = record(cx);
  vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipeline);
  vkCmdPushConstants(cmd, p.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, pc_bytes, pc);
  vkCmdDispatch(cmd, gx, gy, gz);
  if (!cx.graph && ++cx.open_dispatches >= kDispatchesPerSubmit) flush(cx, false);
}

// ---- split K ----
SplitK split_k(int64_t m, int64_t n, int64_t k) {
  const int64_t tiles = ((m + 63) / 64) * ((n + 63) / 64);
  constexpr int64_t kEnoughTiles = 32, kMinChunk = 256, kMaxSplits = 64;
  if (tiles >= kEnoughTiles || k < 2 * kMinChunk) return {1, uint32_t(k)};
  const int64_t splits =
      std::min({(kEnoughTiles * 2 + tiles - 1) / tiles, k / kMinChunk, kMaxSplits});
  const int64_t chunk = ((k + splits - 1) / splits + 15) / 16 * 16;
  return {uint32_t((k + chunk - 1) / chunk), uint32_t(chunk)};
}

float* split_k_scratch(Context& cx, size_t bytes) {
  if (cx.scratch.bytes < bytes) {
    if (cx.scratch.buffer) cx.retired.push_back(cx.scratch);
    cx.scratch = make_buffer(cx, (bytes + 255) / 256 * 256, cx.memory_type, false, "split K");
  }
  return reinterpret_cast<float*>(uintptr_t(cx.scratch.address));
}

void sum_splits(Context& cx, const float* part, float* y, uint32_t count, uint32_t splits) {
  struct SumPC {
    uint64_t part, y;
    uint32_t count, splits;
  };
  dispatch(cx, "sum_splits", SumPC{addr(part), addr(y), count, splits}, groups_for(count, 256));
}

// ---- memory ----
namespace {

constexpr size_t kStagingBytes = size_t(16) << 20;

void* alloc(void* ctx, size_t bytes) {
  Context& cx = context(ctx);
  // 256 bytes at least and a multiple of it: every buffer ends on a word boundary, so shaders may
  // read uint8 data a 32-bit word at a time.
  const size_t rounded = bytes == 0 ? 256 : (bytes + 255) / 256 * 256;
  if (rounded > cx.max_allocation)
    throw OutOfMemory(
        fmt::format("vulkan: {} allocates at most {:.1f} MiB in one buffer; asked for "
                    "{:.1f} MiB; try a smaller --batch",
                    cx.device_name, cx.max_allocation / 1048576.0, bytes / 1048576.0),
        bytes, size_t(cx.max_allocation));
  Buffer b = make_buffer(cx, rounded, cx.memory_type, cx.unified, "alloc");
  if (b.mapped) {
    std::memset(b.mapped, 0, rounded);
  } else {  // in issue order, outside a graph being recorded (a replay must not clear it)
    const VkCommandBuffer graph = cx.graph;
    cx.graph = VK_NULL_HANDLE;
    vkCmdFillBuffer(record(cx), b.buffer, 0, VK_WHOLE_SIZE, 0);
    cx.graph = graph;
  }
  cx.buffers[b.address] = b;
  return reinterpret_cast<void*>(uintptr_t(b.address));
}

// Waits for the device without throwing (frees run in destructors, also while an error unwinds).
void quiet_wait(Context& cx) {
  try {
    flush(cx, true);
  } catch (const Error&) {
    vkQueueWaitIdle(cx.queue);
  }
}

void free_(void* ctx, void* p) {
  if (!p) return;
  Context& cx = context(ctx);
  auto it = cx.buffers.find(addr(p));
  if (it == cx.buffers.end()) return;
  if (!idle(cx)) quiet_wait(cx);  // recorded work may still use it
  destroy_buffer(cx, it->second);
  cx.buffers.erase(it);
}

void check_range(const Buffer& b, VkDeviceSize off, size_t bytes, const char* op) {
  if (off + bytes > b.bytes)
    fail("vulkan {}: {} bytes at offset {} run past the end of a {}-byte buffer", op, bytes, off,
         b.bytes);
}

void upload(void* ctx, void* dst, const void* src, size_t bytes) {
  Context& cx = context(ctx);
  if (!bytes) return;
  TB_CHECK(!cx.graph, "vulkan upload: not while recording a graph");
  VkDeviceSize off = 0;
  const Buffer& b = buffer_at(cx, dst, &off, "upload");
  check_range(b, off, bytes, "upload");
  // Small writes go into the command stream in order (the cursor's fields at an epoch's start).
  if (!(b.mapped && idle(cx)) && bytes <= 65536 && bytes % 4 == 0 && off % 4 == 0) {
    vkCmdUpdateBuffer(record(cx), b.buffer, off, bytes, src);
    return;
  }
  flush(cx, true);
  if (b.mapped) {
    std::memcpy(b.mapped + off, src, bytes);
    return;
  }
  for (size_t done = 0; done < bytes; done += kStagingBytes) {
    const size_t n = std::min(kStagingBytes, bytes - done);
    std::memcpy(cx.staging.mapped, static_cast<const uint8_t*>(src) + done, n);
    VkBufferCopy region{0, off + done, n};
    vkCmdCopyBuffer(record(cx), cx.staging.buffer, b.buffer, 1, &region);
    flush(cx, true);
  }
}

void download(void* ctx, void* dst, const void* src, size_t bytes) {
  Context& cx = context(ctx);
  TB_CHECK(!cx.graph, "vulkan download: not while recording a graph");
  flush(cx, true);
  check_validation("download");
  if (!bytes) return;
  VkDeviceSize off = 0;
  const Buffer& b = buffer_at(cx, src, &off, "download");
  check_range(b, off, bytes, "download");
  if (b.mapped) {
    std::memcpy(dst, b.mapped + off, bytes);
    return;
  }
  for (size_t done = 0; done < bytes; done += kStagingBytes) {
    const size_t n = std::min(kStagingBytes, bytes - done);
    VkBufferCopy region{off + done, 0, n};
    vkCmdCopyBuffer(record(cx), b.buffer, cx.staging.buffer, 1, &region);
    flush(cx, true);
    std::memcpy(static_cast<uint8_t*>(dst) + done, cx.staging.mapped, n);
  }
}

void copy(void* ctx, void* dst, const void* src, size_t bytes) {
  if (!bytes || dst == src) return;
  Context& cx = context(ctx);
  VkDeviceSize doff = 0, soff = 0;
  const Buffer& d = buffer_at(cx, dst, &doff, "copy");
  const Buffer& s = buffer_at(cx, src, &soff, "copy");
  check_range(d, doff, bytes, "copy");
  check_range(s, soff, bytes, "copy");
  VkBufferCopy region{soff, doff, bytes};
  vkCmdCopyBuffer(record(cx), s.buffer, d.buffer, 1, &region);
}

void fill(void* ctx, float* dst, float value, int64_t count) {
  if (count <= 0) return;
  Context& cx = context(ctx);
  VkDeviceSize off = 0;
  const Buffer& b = buffer_at(cx, dst, &off, "fill");
  check_range(b, off, size_t(count) * 4, "fill");
  uint32_t bits = 0;
  std::memcpy(&bits, &value, 4);
  vkCmdFillBuffer(record(cx), b.buffer, off, VkDeviceSize(count) * 4, bits);
}

void synchronize(void* ctx) {
  Context& cx = context(ctx);
  TB_CHECK(!cx.graph, "vulkan synchronize: not while recording a graph");
  flush(cx, true);
  check_validation("synchronize");
}

// ---- graphs: the ops between graph_begin and graph_end recorded into a command buffer of their
// own, submitted whole by each graph_launch ----
struct Graph {
  VkCommandBuffer cmd = VK_NULL_HANDLE;
};

void graph_begin(void* ctx) {
  Context& cx = context(ctx);
  TB_CHECK(!cx.graph, "vulkan graph_begin: a graph is already being recorded");
  // Launched again before it finishes; graph_destroy frees it (a spare one is not given back).
  cx.graph = new_command_buffer(cx, VK_COMMAND_BUFFER_USAGE_SIMULTANEOUS_USE_BIT);
}

void graph_destroy(void* ctx, void* p) {
  Context& cx = context(ctx);
  auto* g = static_cast<Graph*>(p);
  if (!g) return;
  quiet_wait(cx);
  vkFreeCommandBuffers(cx.device, cx.pool, 1, &g->cmd);
  delete g;
}

void* graph_end(void* ctx) {
  Context& cx = context(ctx);
  TB_CHECK(cx.graph, "vulkan graph_end: no graph is being recorded");
  VkCommandBuffer cmd = cx.graph;
  cx.graph = VK_NULL_HANDLE;
  barrier(cmd, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
  const VkResult r = vkEndCommandBuffer(cmd);
  if (r != VK_SUCCESS) {
    vkFreeCommandBuffers(cx.device, cx.pool, 1, &cmd);
    fail("vulkan graph_end: recording the step failed: {}", result_name(r));
  }
  return new Graph{cmd};
}

void graph_launch(void* ctx, void* p) {
  Context& cx = context(ctx);
  flush(cx, false);  // what was issued before goes first
  submit(cx, static_cast<Graph*>(p)->cmd, false);
  flush(cx, false);
}

void destroy_context(void* p) {
  auto* cx = static_cast<Context*>(p);
  if (!cx) return;
  if (cx->device) {
    vkQueueWaitIdle(cx->queue);
    for (auto& s : cx->in_flight) vkDestroyFence(cx->device, s.fence, nullptr);
    for (VkFence f : cx->spare_fences) vkDestroyFence(cx->device, f, nullptr);
    for (auto& [a, b] : cx->buffers) destroy_buffer(*cx, b);
    if (cx->staging.buffer) destroy_buffer(*cx, cx->staging);
    if (cx->scratch.buffer) destroy_buffer(*cx, cx->scratch);
    for (Buffer& r : cx->retired) destroy_buffer(*cx, r);
    for (auto& [n, pl] : cx->pipelines) {
      vkDestroyPipeline(cx->device, pl.pipeline, nullptr);
      vkDestroyPipelineLayout(cx->device, pl.layout, nullptr);
    }
    if (cx->pool) vkDestroyCommandPool(cx->device, cx->pool, nullptr);  // frees its buffers
    vkDestroyDevice(cx->device, nullptr);
  }
  delete cx;
}

}  // namespace

}  // namespace tb::vulkan

namespace tb {

using namespace vulkan;

std::unique_ptr<Backend> make_vulkan_backend(const BackendConfig& cfg) {
  TB_CHECK(cfg.device == DeviceKind::vulkan, "the Vulkan backend runs on Vulkan devices only");
  TB_CHECK(cfg.precision == Precision::fp32,
           "--precision {} on vulkan: the Vulkan backend computes in fp32 only",
           precision_name(cfg.precision));
  const std::vector<VkPhysicalDevice> pds = physical_devices();  // throws without a loader
  TB_CHECK(!pds.empty(), "--device vulkan: the Vulkan loader lists no device on this machine");
  TB_CHECK(cfg.device_index >= 0 && size_t(cfg.device_index) < pds.size(),
           "--device vulkan:{}: this machine has {} Vulkan device(s)", cfg.device_index,
           pds.size());
  VkPhysicalDevice pd = pds[size_t(cfg.device_index)];
  VkPhysicalDeviceProperties props{};
  vkGetPhysicalDeviceProperties(pd, &props);
  const std::string missing = missing_feature(pd);
  if (!missing.empty())
    fail("--device vulkan:{}: {} lacks {}, which the Vulkan backend needs", cfg.device_index,
         props.deviceName, missing);

  auto b = std::make_unique<Backend>();
  auto* cx = new Context();
  b->ctx = cx;  // from here the Backend's destructor cleans up, also when a step below throws
  b->destroy = destroy_context;
  cx->physical = pd;
  cx->deterministic = cfg.deterministic;
  cx->device_name = fmt::format("vulkan:{} ({})", cfg.device_index, props.deviceName);

  // A compute queue; one with timestamps where there is a choice.
  uint32_t nq = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, nullptr);
  std::vector<VkQueueFamilyProperties> qs(nq);
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qs.data());
  int64_t family = -1;
  for (uint32_t i = 0; i < nq; ++i)
    if ((qs[i].queueFlags & VK_QUEUE_COMPUTE_BIT) &&
        (family < 0 || (qs[i].timestampValidBits && !qs[size_t(family)].timestampValidBits)))
      family = i;
  cx->queue_family = uint32_t(family);
  cx->timestamps = qs[size_t(family)].timestampValidBits > 0 && props.limits.timestampPeriod > 0;
  cx->timestamp_period_ns = props.limits.timestampPeriod;

  auto f12 =
      make<VkPhysicalDeviceVulkan12Features>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES);
  f12.bufferDeviceAddress = VK_TRUE;
  auto f = make<VkPhysicalDeviceFeatures2>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2);
  f.pNext = &f12;
  f.features.shaderInt64 = VK_TRUE;
  std::vector<const char*> exts;
  // A portability driver (MoltenVK) must be opened with the subset extension it lists.
  if (has_extension(device_extensions(pd), "VK_KHR_portability_subset"))
    exts.push_back("VK_KHR_portability_subset");
  const float priority = 1.f;
  auto qi = make<VkDeviceQueueCreateInfo>(VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO);
  qi.queueFamilyIndex = cx->queue_family;
  qi.queueCount = 1;
  qi.pQueuePriorities = &priority;
  auto di = make<VkDeviceCreateInfo>(VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO);
  di.pNext = &f;
  di.queueCreateInfoCount = 1;
  di.pQueueCreateInfos = &qi;
  di.enabledExtensionCount = uint32_t(exts.size());
  di.ppEnabledExtensionNames = exts.data();
  TB_VK_CHECK(vkCreateDevice(pd, &di, nullptr, &cx->device), "init");
  vkGetDeviceQueue(cx->device, cx->queue_family, 0, &cx->queue);
  auto pi = make<VkCommandPoolCreateInfo>(VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO);
  pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pi.queueFamilyIndex = cx->queue_family;
  TB_VK_CHECK(vkCreateCommandPool(cx->device, &pi, nullptr, &cx->pool), "init");

  choose_memory(*cx);
  // Tests run the staging path on a device with unified memory (lavapipe) this way.
  if (const char* e = std::getenv("TB_VULKAN_STAGING"); e && std::strcmp(e, "1") == 0)
    cx->unified = false;
  auto m3 = make<VkPhysicalDeviceMaintenance3Properties>(
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES);
  auto p2 = make<VkPhysicalDeviceProperties2>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2);
  p2.pNext = &m3;
  vkGetPhysicalDeviceProperties2(pd, &p2);
  cx->max_allocation = std::min<VkDeviceSize>(m3.maxMemoryAllocationSize, cx->heap_bytes);
  if (!cx->unified) cx->staging = make_buffer(*cx, kStagingBytes, staging_type(*cx), true, "init");

  b->name = "vulkan";
  b->device = DeviceKind::vulkan;
  b->precision = Precision::fp32;
  b->alloc = alloc;
  b->free = free_;
  b->upload = upload;
  b->download = download;
  b->copy = copy;
  b->fill = fill;
  b->synchronize = synchronize;
  if (cfg.graphs) {
    b->graph_begin = graph_begin;
    b->graph_end = graph_end;
    b->graph_launch = graph_launch;
    b->graph_destroy = graph_destroy;
  }
  register_elementwise(*b);
  register_dense(*b);
  register_conv2d(*b);
  register_batchnorm(*b);
  register_pool(*b);
  register_optimizers(*b);
  if (cx->timestamps) register_timers(*b);
  return b;
}

}  // namespace tb
