// The Vulkan loader and the process's instance, failures, and what each physical device offers
// (the checks the backend makes before opening one, and what `trainbench devices` lists).
#include <dlfcn.h>
#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "backends/backend.h"
#include "backends/vulkan/vulkan_context.h"
#include "backends/vulkan/vulkan_info.h"
#include "core/error.h"

namespace tb::vulkan {

#define TB_VK_DEFINE(name) PFN_##name name = nullptr;
TB_VK_FUNCTIONS(TB_VK_DEFINE)
#undef TB_VK_DEFINE

// ---- failures ----
const char* result_name(VkResult r) {
  switch (r) {
    case VK_NOT_READY:
      return "VK_NOT_READY";
    case VK_TIMEOUT:
      return "VK_TIMEOUT";
    case VK_INCOMPLETE:
      return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY:
      return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
      return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
      return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST:
      return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED:
      return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT:
      return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT:
      return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT:
      return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER:
      return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS:
      return "VK_ERROR_TOO_MANY_OBJECTS";
    default:
      return "VkResult error";
  }
}

void fail_vk(VkResult r, const char* call, const char* op, const char* file, int line) {
  std::string f = file;
  const auto at = f.rfind("/src/");
  if (at != std::string::npos) f = f.substr(at + 1);
  throw Error(fmt::format("vulkan {}: {} failed: {} ({}) [{}:{}]", op, call, result_name(r), int(r),
                          f, line));
}

uint32_t u32(int64_t v, const char* op) {
  if (v < 0 || v > int64_t(0x7fffffff))
    fail("vulkan {}: size {} is outside what the shaders index (0 .. 2^31-1)", op, v);
  return uint32_t(v);
}

// ---- the loader and the instance ----
namespace {

std::mutex g_mutex;  // the instance and the validation messages
VkInstance g_instance = VK_NULL_HANDLE;
VkDebugUtilsMessengerEXT g_messenger = VK_NULL_HANDLE;
std::string g_instance_error;  // why the instance could not be made (sticky)
std::vector<std::string> g_validation;

VKAPI_ATTR VkBool32 VKAPI_CALL on_validation(VkDebugUtilsMessageSeverityFlagBitsEXT,
                                             VkDebugUtilsMessageTypeFlagsEXT,
                                             const VkDebugUtilsMessengerCallbackDataEXT* data,
                                             void*) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_validation.push_back(data && data->pMessage ? data->pMessage : "(no message)");
  return VK_FALSE;
}

PFN_vkGetInstanceProcAddr open_loader() {
  for (const char* lib :
       {"libvulkan.so.1", "libvulkan.so", "libvulkan.1.dylib", "libMoltenVK.dylib"})
    if (void* h = dlopen(lib, RTLD_NOW | RTLD_LOCAL))
      if (void* f = dlsym(h, "vkGetInstanceProcAddr"))
        return reinterpret_cast<PFN_vkGetInstanceProcAddr>(f);
  return nullptr;
}

VkInstance make_instance() {
  PFN_vkGetInstanceProcAddr gipa = open_loader();
  if (!gipa) fail("vulkan: no Vulkan loader (libvulkan.so.1) on this machine");
#define TB_VK_LOAD(name) name = reinterpret_cast<PFN_##name>(gipa(nullptr, #name));
  TB_VK_FUNCTIONS(TB_VK_LOAD)
#undef TB_VK_LOAD
  if (!vkCreateInstance || !vkEnumerateInstanceExtensionProperties)
    fail("vulkan: the Vulkan loader lacks vkCreateInstance");
  uint32_t api = VK_API_VERSION_1_0;
  if (vkEnumerateInstanceVersion) vkEnumerateInstanceVersion(&api);
  if (api < VK_API_VERSION_1_2)
    fail("vulkan: the Vulkan loader is version {}.{}; trainbench needs 1.2", VK_VERSION_MAJOR(api),
         VK_VERSION_MINOR(api));

  uint32_t n = 0;
  vkEnumerateInstanceExtensionProperties(nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> exts(n);
  vkEnumerateInstanceExtensionProperties(nullptr, &n, exts.data());
  std::vector<const char*> enable;
  VkInstanceCreateFlags flags = 0;
  // MoltenVK lists its devices only to instances that ask for portability drivers.
  if (has_extension(exts, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
    enable.push_back(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
  }
  std::vector<const char*> layers;
  const char* want = std::getenv("TB_VULKAN_VALIDATION");
  const bool validate = want && std::strcmp(want, "0") != 0;
  if (validate) {
    uint32_t nl = 0;
    vkEnumerateInstanceLayerProperties(&nl, nullptr);
    std::vector<VkLayerProperties> ls(nl);
    vkEnumerateInstanceLayerProperties(&nl, ls.data());
    bool found = false;
    for (const auto& l : ls) found |= std::strcmp(l.layerName, "VK_LAYER_KHRONOS_validation") == 0;
    if (!found || !has_extension(exts, VK_EXT_DEBUG_UTILS_EXTENSION_NAME))
      fail(
          "vulkan: TB_VULKAN_VALIDATION is set but VK_LAYER_KHRONOS_validation or "
          "VK_EXT_debug_utils is not installed (apt-get install vulkan-validationlayers)");
    layers.push_back("VK_LAYER_KHRONOS_validation");
    enable.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
  }
  auto app = make<VkApplicationInfo>(VK_STRUCTURE_TYPE_APPLICATION_INFO);
  app.pApplicationName = "trainbench";
  app.apiVersion = VK_API_VERSION_1_2;
  auto ci = make<VkInstanceCreateInfo>(VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO);
  ci.flags = flags;
  ci.pApplicationInfo = &app;
  ci.enabledExtensionCount = uint32_t(enable.size());
  ci.ppEnabledExtensionNames = enable.data();
  ci.enabledLayerCount = uint32_t(layers.size());
  ci.ppEnabledLayerNames = layers.data();
  VkInstance inst = VK_NULL_HANDLE;
  const VkResult r = vkCreateInstance(&ci, nullptr, &inst);
  if (r == VK_ERROR_INCOMPATIBLE_DRIVER)  // the loader found no driver (ICD) at all
    fail(
        "vulkan: the loader finds no Vulkan driver on this machine (VK_ERROR_INCOMPATIBLE_DRIVER; "
        "Mesa's are in mesa-vulkan-drivers)");
  if (r != VK_SUCCESS) fail_vk(r, "vkCreateInstance", "init", __FILE__, __LINE__);
#define TB_VK_LOAD(name) \
  if (!name) name = reinterpret_cast<PFN_##name>(gipa(inst, #name));
  TB_VK_FUNCTIONS(TB_VK_LOAD)
#undef TB_VK_LOAD
  if (validate) {
    auto mi = make<VkDebugUtilsMessengerCreateInfoEXT>(
        VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT);
    mi.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                         VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
    mi.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
    mi.pfnUserCallback = on_validation;
    TB_VK_CHECK(vkCreateDebugUtilsMessengerEXT(inst, &mi, nullptr, &g_messenger), "init");
  }
  return inst;
}

}  // namespace

bool has_extension(const std::vector<VkExtensionProperties>& exts, const char* name) {
  for (const auto& e : exts)
    if (std::strcmp(e.extensionName, name) == 0) return true;
  return false;
}

VkInstance instance() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_instance) return g_instance;
  if (!g_instance_error.empty()) throw Error(g_instance_error);
  try {
    g_instance = make_instance();
  } catch (const Error& e) {
    g_instance_error = e.what();
    throw;
  }
  return g_instance;
}

std::vector<std::string> take_validation_messages() {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<std::string> out;
  out.swap(g_validation);
  return out;
}

void check_validation(const char* op) {
  const auto msgs = take_validation_messages();
  if (!msgs.empty())
    fail("vulkan {}: the validation layer reported {} message(s), the first: {}", op, msgs.size(),
         msgs[0]);
}

std::vector<VkPhysicalDevice> physical_devices() {
  VkInstance inst = instance();
  uint32_t n = 0;
  vkEnumeratePhysicalDevices(inst, &n, nullptr);
  std::vector<VkPhysicalDevice> out(n);
  if (n) vkEnumeratePhysicalDevices(inst, &n, out.data());
  out.resize(n);
  return out;
}

std::vector<VkExtensionProperties> device_extensions(VkPhysicalDevice pd) {
  uint32_t n = 0;
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> exts(n);
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, exts.data());
  return exts;
}

std::string missing_feature(VkPhysicalDevice pd) {
  VkPhysicalDeviceProperties p{};
  vkGetPhysicalDeviceProperties(pd, &p);
  if (p.apiVersion < VK_API_VERSION_1_2)
    return fmt::format("Vulkan 1.2 (the driver offers {}.{})", VK_VERSION_MAJOR(p.apiVersion),
                       VK_VERSION_MINOR(p.apiVersion));
  auto f12 =
      make<VkPhysicalDeviceVulkan12Features>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES);
  auto f = make<VkPhysicalDeviceFeatures2>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2);
  f.pNext = &f12;
  vkGetPhysicalDeviceFeatures2(pd, &f);
  if (!f12.bufferDeviceAddress) return "the bufferDeviceAddress feature";
  if (!f.features.shaderInt64) return "the shaderInt64 feature";
  if (p.limits.maxComputeWorkGroupInvocations < 256)  // the shaders' workgroups
    return "256 invocations per workgroup (maxComputeWorkGroupInvocations)";
  uint32_t nq = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, nullptr);
  std::vector<VkQueueFamilyProperties> qs(nq);
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qs.data());
  for (const auto& q : qs)
    if (q.queueFlags & VK_QUEUE_COMPUTE_BIT) return "";
  return "a compute queue";
}

}  // namespace tb::vulkan

namespace tb {

using namespace vulkan;

namespace {
std::string driver_string(const VkPhysicalDeviceDriverProperties& d) {
  return fmt::format("{} {}", d.driverName, d.driverInfo);
}
}  // namespace

std::string vulkan_unavailable_reason() {
  std::vector<VkPhysicalDevice> pds;
  try {
    pds = physical_devices();
  } catch (const Error& e) {
    return e.what();
  }
  if (pds.empty()) return "vulkan: the loader lists no Vulkan device";
  std::string first;
  for (VkPhysicalDevice pd : pds) {
    const std::string m = missing_feature(pd);
    if (m.empty()) return "";
    if (first.empty()) {
      VkPhysicalDeviceProperties p{};
      vkGetPhysicalDeviceProperties(pd, &p);
      first = fmt::format("vulkan: {} lacks {}", p.deviceName, m);
    }
  }
  return first;
}

int vulkan_device_count() {
  try {
    return int(physical_devices().size());
  } catch (const Error&) {
    return 0;
  }
}

std::vector<VulkanDeviceInfo> vulkan_devices() {
  std::vector<VulkanDeviceInfo> out;
  std::vector<VkPhysicalDevice> pds;
  try {
    pds = physical_devices();
  } catch (const Error&) {
    return out;
  }
  for (size_t i = 0; i < pds.size(); ++i) {
    VkPhysicalDevice pd = pds[i];
    VulkanDeviceInfo d;
    d.index = int(i);
    auto drv =
        make<VkPhysicalDeviceDriverProperties>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES);
    auto sub = make<VkPhysicalDeviceSubgroupProperties>(
        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES);
    sub.pNext = &drv;
    auto p2 = make<VkPhysicalDeviceProperties2>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2);
    p2.pNext = &sub;
    vkGetPhysicalDeviceProperties2(pd, &p2);
    const VkPhysicalDeviceProperties& p = p2.properties;
    d.name = p.deviceName;
    switch (p.deviceType) {
      case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        d.type = "discrete";
        break;
      case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        d.type = "integrated";
        break;
      case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        d.type = "virtual";
        break;
      case VK_PHYSICAL_DEVICE_TYPE_CPU:
        d.type = "cpu";
        break;
      default:
        d.type = "other";
    }
    d.api_version = fmt::format("{}.{}.{}", VK_VERSION_MAJOR(p.apiVersion),
                                VK_VERSION_MINOR(p.apiVersion), VK_VERSION_PATCH(p.apiVersion));
    d.driver = p.apiVersion >= VK_API_VERSION_1_2 ? driver_string(drv) : "unknown";
    d.subgroup_size = sub.subgroupSize;
    Context probe;
    probe.physical = pd;
    choose_memory(probe);
    d.memory_bytes = int64_t(probe.heap_bytes);
    d.unified = probe.unified;
    auto f12 = make<VkPhysicalDeviceVulkan12Features>(
        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES);
    auto f = make<VkPhysicalDeviceFeatures2>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2);
    f.pNext = &f12;
    if (p.apiVersion >= VK_API_VERSION_1_2) vkGetPhysicalDeviceFeatures2(pd, &f);
    d.fp16 = f12.shaderFloat16;
    const auto exts = device_extensions(pd);
    d.cooperative_matrix = has_extension(exts, "VK_KHR_cooperative_matrix") ||
                           has_extension(exts, "VK_NV_cooperative_matrix");
    d.why_not = missing_feature(pd);
    d.usable = d.why_not.empty();
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace tb
