// NVML, loaded at run time with dlopen("libnvidia-ml.so.1"), so that the binary neither needs
// the CUDA toolkit to build nor the NVIDIA driver to run. No driver (or no GPU at that index)
// means "no GPU telemetry", never an error. Only the dozen functions we use are declared here.
//
// Nvml is one open session (nvmlInit_v2 ... nvmlShutdown); whoever needs it owns one. NVML
// reference-counts init/shutdown and dlopen is reference-counted too, so sessions can overlap.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tb {

// What `trainbench devices` and the machine record show for one NVIDIA GPU.
struct NvmlInfo {
  int index = 0;
  std::string name;            // "NVIDIA H100 80GB HBM3"
  std::string driver_version;  // "550.54.15"
  uint64_t memory_total_bytes = 0;
};

// One reading of one GPU. A field the driver would not give is nullopt (some are missing on
// consumer boards or inside containers).
struct GpuReading {
  std::optional<double> busy_pct;      // % of the sample period a kernel was running
  std::optional<double> mem_busy_pct;  // % of the period device memory was read or written
  std::optional<double> mem_used_mb;
  std::optional<double> sm_clock_mhz;
  std::optional<double> power_w;
  std::optional<uint64_t> throttle;  // nvmlClocksEventReason* bitmask; see throttle_reason_names
};

// Bit names of NVML's clocks-event ("throttle") reasons, in bit order: "idle", "power cap", ...
std::vector<std::string> throttle_reason_names(uint64_t bits);

class Nvml {
 public:
  // nullptr when libnvidia-ml.so.1 is absent or nvmlInit_v2 fails.
  static std::unique_ptr<Nvml> open();
  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  int device_count() const;
  std::string driver_version() const;
  std::optional<NvmlInfo> info(int index) const;
  // nullopt when there is no device at index.
  std::optional<GpuReading> read(int index) const;

  struct Api;  // function pointers, defined in nvml.cpp

 private:
  Nvml() = default;
  void* lib_ = nullptr;
  std::unique_ptr<Api> api_;
};

// One-shot query for `trainbench devices`; nullopt when there is no NVML or no GPU at index.
std::optional<NvmlInfo> nvml_query(int index);
// Every GPU NVML sees (empty without NVML).
std::vector<NvmlInfo> nvml_query_all();

}  // namespace tb
