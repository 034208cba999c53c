// The Vulkan backend's context: one device, one compute queue, the buffers and the command buffer
// that ops are recorded into.
//
// Device pointers are buffer device addresses (Vulkan 1.2 bufferDeviceAddress, GLSL
// GL_EXT_buffer_reference). The backend table hands ops plain void*/float* that the executor
// offsets into (parameters packed in one array, activations in one arena); a 64-bit GPU address
// keeps that arithmetic valid on the host and lets a shader take any pointer as a push constant,
// with no descriptor sets to build or bind per op. alloc returns the address; `buffers` maps each
// address back to its VkBuffer and mapping for uploads, downloads and copies at any offset. Shaders
// also need shaderInt64 (the StepCursor's fields, the augmentation hash) and 256 invocations per
// workgroup; a device without them is refused with a one-line error naming what it lacks.
//
// Memory: where one memory type is device-local and host-visible on the largest device heap
// (Apple silicon, integrated GPUs, lavapipe, resizable BAR) every buffer is mapped and uploads and
// downloads are memcpy; elsewhere they go through a host-visible staging buffer.
//
// Execution: ops record dispatches, each behind a full compute/transfer barrier, into one command
// buffer that is submitted at synchronize/download, or when it holds kDispatchesPerSubmit, without
// waiting. Between graph_begin and graph_end they record into a command buffer of their own that
// graph_launch submits as often as it is asked (the whole training step, one submit).
#pragma once
#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "backends/backend.h"

namespace tb::vulkan {

// ---- the loader, opened at run time (a machine without libvulkan gets an error, not a crash) ----
// clang-format off
#define TB_VK_FUNCTIONS(X) \
  X(vkCreateInstance) X(vkEnumerateInstanceExtensionProperties) \
  X(vkEnumerateInstanceLayerProperties) X(vkEnumerateInstanceVersion) X(vkDestroyInstance) \
  X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties) \
  X(vkGetPhysicalDeviceProperties2) X(vkGetPhysicalDeviceFeatures2) \
  X(vkGetPhysicalDeviceMemoryProperties) X(vkGetPhysicalDeviceQueueFamilyProperties) \
  X(vkEnumerateDeviceExtensionProperties) X(vkCreateDevice) X(vkDestroyDevice) \
  X(vkGetDeviceQueue) X(vkCreateDebugUtilsMessengerEXT) X(vkDestroyDebugUtilsMessengerEXT) \
  X(vkCreateBuffer) X(vkDestroyBuffer) X(vkGetBufferMemoryRequirements) X(vkAllocateMemory) \
  X(vkFreeMemory) X(vkBindBufferMemory) X(vkMapMemory) X(vkGetBufferDeviceAddress) \
  X(vkCreateShaderModule) X(vkDestroyShaderModule) X(vkCreatePipelineLayout) \
  X(vkDestroyPipelineLayout) X(vkCreateComputePipelines) X(vkDestroyPipeline) \
  X(vkCreateCommandPool) X(vkDestroyCommandPool) X(vkAllocateCommandBuffers) \
  X(vkFreeCommandBuffers) X(vkBeginCommandBuffer) X(vkEndCommandBuffer) X(vkResetCommandBuffer) \
  X(vkCmdBindPipeline) X(vkCmdPushConstants) X(vkCmdDispatch) X(vkCmdPipelineBarrier) \
  X(vkCmdCopyBuffer) X(vkCmdFillBuffer) X(vkCmdUpdateBuffer) X(vkCmdWriteTimestamp) \
  X(vkCmdResetQueryPool) X(vkCreateQueryPool) X(vkDestroyQueryPool) X(vkGetQueryPoolResults) \
  X(vkQueueSubmit) X(vkQueueWaitIdle) X(vkCreateFence) X(vkDestroyFence) X(vkWaitForFences) \
  X(vkResetFences)
// clang-format on

#define TB_VK_DECLARE(name) extern PFN_##name name;
TB_VK_FUNCTIONS(TB_VK_DECLARE)
#undef TB_VK_DECLARE

// The process's one VkInstance (created on first use, with the Khronos validation layer and a
// messenger when TB_VULKAN_VALIDATION=1). Throws Error naming what is missing.
VkInstance instance();
// Validation messages since the last call (the tests fail on any).
std::vector<std::string> take_validation_messages();

// ---- the context ----
struct Buffer {
  uint64_t address = 0;
  size_t bytes = 0;
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  uint8_t* mapped = nullptr;  // null where memory is not host-visible
};

struct Pipeline {
  VkPipeline pipeline = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
};

struct Submitted {
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  VkFence fence = VK_NULL_HANDLE;
};

constexpr int kDispatchesPerSubmit = 512;
constexpr uint32_t kMaxGroups = 65535;  // per dimension, the least every device allows
constexpr uint32_t kPushBytes = 128;    // the least every device allows

struct Context {
  VkPhysicalDevice physical = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;
  uint32_t queue_family = 0;
  std::string device_name;
  bool deterministic = false;

  // memory
  uint32_t memory_type = 0;
  bool unified = false;  // every buffer mapped (see above)
  VkDeviceSize heap_bytes = 0, allocated_bytes = 0, max_allocation = 0;
  std::map<uint64_t, Buffer> buffers;  // by device address
  Buffer staging;                      // where !unified
  // Split-K partial results (split_k_scratch), grown on first use; outgrown ones are kept until
  // the context goes, since recorded graphs may point into them.
  Buffer scratch;
  std::vector<Buffer> retired;

  // commands
  VkCommandPool pool = VK_NULL_HANDLE;
  VkCommandBuffer open = VK_NULL_HANDLE;  // the command buffer ops record into; null: none yet
  int open_dispatches = 0;
  VkCommandBuffer graph = VK_NULL_HANDLE;  // between graph_begin and graph_end
  std::deque<Submitted> in_flight;
  std::vector<VkCommandBuffer> spare_cmds;
  std::vector<VkFence> spare_fences;
  std::map<std::string, Pipeline, std::less<>> pipelines;  // by shader name, made on first use

  // timers
  bool timestamps = false;
  float timestamp_period_ns = 1.f;
};

// A Vulkan info struct, zeroed, with its sType.
template <class T>
T make(VkStructureType type) {
  T v{};
  v.sType = type;
  return v;
}

inline Context& context(void* ctx) {
  return *static_cast<Context*>(ctx);
}

// ---- failures ----
const char* result_name(VkResult r);
[[noreturn]] void fail_vk(VkResult r, const char* call, const char* op, const char* file, int line);
#define TB_VK_CHECK(call, op)                                                               \
  do {                                                                                      \
    VkResult tb_r_ = (call);                                                                \
    if (tb_r_ != VK_SUCCESS) ::tb::vulkan::fail_vk(tb_r_, #call, (op), __FILE__, __LINE__); \
  } while (0)

// ---- devices (devices.cpp) ----
// Throws Error with the first message the validation layer reported since the last call.
void check_validation(const char* op);
std::vector<VkPhysicalDevice> physical_devices();  // throws without a loader or instance
std::vector<VkExtensionProperties> device_extensions(VkPhysicalDevice pd);
bool has_extension(const std::vector<VkExtensionProperties>& exts, const char* name);
// What trainbench needs of a device; "" when it has it all, else the first missing piece.
std::string missing_feature(VkPhysicalDevice pd);

// ---- memory and commands (vulkan_backend.cpp) ----
// The memory type buffers live in: device-local and host-visible (coherent) where that type sits
// on the largest device-local heap (unified memory, or a full-size BAR), else device-local.
void choose_memory(Context& cx);
// The buffer holding device address p, and p's offset in it; throws for an address not ours.
const Buffer& buffer_at(Context& cx, const void* p, VkDeviceSize* offset, const char* op);
// The command buffer being recorded (the graph's while recording one), after a barrier that
// orders it behind every earlier dispatch and copy.
VkCommandBuffer record(Context& cx);
// Submits what is recorded; wait: also waits for everything submitted (and checks validation).
void flush(Context& cx, bool wait);

// One dispatch of shader `name` (shaders/<name>.comp) with push constants `pc`.
void dispatch_raw(Context& cx, const char* name, const void* pc, uint32_t pc_bytes, uint32_t gx,
                  uint32_t gy, uint32_t gz);
template <class PC>
void dispatch(Context& cx, const char* name, const PC& pc, uint32_t gx, uint32_t gy = 1,
              uint32_t gz = 1) {
  static_assert(sizeof(PC) <= kPushBytes, "push constants over the 128 bytes every device has");
  dispatch_raw(cx, name, &pc, sizeof(PC), gx, gy, gz);
}

// Workgroups for a grid-stride loop over `work` items, `per_group` each, at most kMaxGroups.
inline uint32_t groups_for(int64_t work, int64_t per_group) {
  int64_t g = (work + per_group - 1) / per_group;
  if (g > kMaxGroups) g = kMaxGroups;
  return g < 1 ? 1u : uint32_t(g);
}
// Split K for a GEMM with few output tiles over a long K (a convolution's weight gradient over a
// large batch): `splits` workgroups along z, each summing `chunk` values of K, so the device has
// enough workgroups to run. From the shape alone: the same split, the same bits, every run.
struct SplitK {
  uint32_t splits = 1, chunk = 0;
};
SplitK split_k(int64_t m, int64_t n, int64_t k);
// Device memory for split partial results, at least `bytes`.
float* split_k_scratch(Context& cx, size_t bytes);
// y[0 .. count) = the sum of the `splits` partials at part, in split order.
void sum_splits(Context& cx, const float* part, float* y, uint32_t count, uint32_t splits);

// Counts travel as uint32 in push constants: refuse what does not fit.
uint32_t u32(int64_t v, const char* op);
// A device pointer as the shader's 64-bit address (0 for null).
inline uint64_t addr(const void* p) {
  return uint64_t(reinterpret_cast<uintptr_t>(p));
}

// ---- registration: each op file fills its entries of the table ----
void register_elementwise(Backend& b);  // elementwise.cpp: relu, add, softmax_ce, gather_batch
void register_dense(Backend& b);        // dense.cpp
void register_conv2d(Backend& b);       // conv2d.cpp
void register_batchnorm(Backend& b);    // batchnorm.cpp
void register_pool(Backend& b);         // pool.cpp
void register_optimizers(Backend& b);   // optimizer.cpp
void register_timers(Backend& b);       // timers.cpp

}  // namespace tb::vulkan
