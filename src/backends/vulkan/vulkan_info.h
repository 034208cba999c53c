// What the Vulkan loader says about this machine's devices. Plain C++ (no Vulkan types), so the
// CLI can include it under #ifdef TRAINBENCH_HAVE_VULKAN.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tb {

struct VulkanDeviceInfo {
  int index = 0;             // N of --device vulkan:N
  std::string name, type;    // type: "discrete", "integrated", "virtual", "cpu", "other"
  std::string driver;        // driver name and version: "llvmpipe Mesa 22.3.6 (LLVM 15.0.6)"
  std::string api_version;   // "1.3.230"
  int64_t memory_bytes = 0;  // the largest device-local heap
  bool unified = false;      // that heap is host-visible: no staging copies
  uint32_t subgroup_size = 0;
  bool fp16 = false, cooperative_matrix = false;
  bool usable = false;  // Vulkan 1.2 with bufferDeviceAddress and shaderInt64
  std::string why_not;  // when not usable
};

// One entry per device the loader lists; empty when there is no loader (never throws for that).
std::vector<VulkanDeviceInfo> vulkan_devices();
// Why the Vulkan backend cannot run here ("" when a device is usable).
std::string vulkan_unavailable_reason();

// fp32 peak of the device, from a table of datasheet figures; nullopt: not in the table.
struct VulkanPeak {
  double flops_per_s = 0;
  std::string source;
};
std::optional<VulkanPeak> vulkan_fp32_peak(const std::string& device_name);

}  // namespace tb
