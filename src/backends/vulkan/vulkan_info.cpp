// Datasheet fp32 peaks of GPUs the Vulkan backend runs on. A device name matches the longest key
// it contains ("Apple M1 Pro" is not an "Apple M1"); RADV appends "(RADV NAVI31)" and the like.
#include <cstring>

#include "backends/vulkan/vulkan_info.h"

namespace tb {

namespace {
struct PeakRow {
  const char* key;
  double tflops;
  const char* source;
};
const PeakRow kPeaks[] = {
    {"Apple M1", 2.6, "Apple M1 press release (Nov 2020): 8-core GPU, 2.6 TFLOPS"},
    {"Apple M1 Pro", 5.2, "Apple M1 Pro/Max press release (Oct 2021): 16-core GPU, 5.2 TFLOPS"},
    {"Apple M1 Max", 10.4, "Apple M1 Pro/Max press release (Oct 2021): 32-core GPU, 10.4 TFLOPS"},
    {"Radeon RX 7900 XTX", 61.4, "AMD product page: 61.4 TFLOPS fp32 (dual-issue), 2.5 GHz boost"},
    {"Radeon RX 6800 XT", 20.74, "AMD product page: 20.74 TFLOPS fp32, 2.25 GHz boost"},
    {"Arc A770", 19.66, "Intel: 32 Xe cores x 128 fp32 lanes x 2 x 2.4 GHz"},
};
}  // namespace

std::optional<VulkanPeak> vulkan_fp32_peak(const std::string& device_name) {
  const PeakRow* best = nullptr;
  for (const PeakRow& r : kPeaks)
    if (device_name.find(r.key) != std::string::npos &&
        (!best || std::strlen(r.key) > std::strlen(best->key)))
      best = &r;
  if (!best) return std::nullopt;
  return VulkanPeak{best->tflops * 1e12, best->source};
}

}  // namespace tb
