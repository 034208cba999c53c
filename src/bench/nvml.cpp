#include "bench/nvml.h"

#include <dlfcn.h>

#include <array>

namespace tb {

// ---------------------------------------------------------------------------------------------
// The slice of nvml.h we need. The layouts are part of NVML's stable C ABI.

namespace {

using nvmlReturn_t = int;  // NVML_SUCCESS = 0
constexpr nvmlReturn_t kNvmlSuccess = 0;
using nvmlDevice_t = struct nvmlDevice_st*;
struct nvmlUtilization_t {
  unsigned int gpu;     // percent of time a kernel was executing
  unsigned int memory;  // percent of time device memory was being read or written
};
struct nvmlMemory_t {
  unsigned long long total, free, used;  // bytes
};
constexpr int kNvmlClockSm = 1;  // nvmlClockType_t NVML_CLOCK_SM

}  // namespace

struct Nvml::Api {
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  nvmlReturn_t (*get_count)(unsigned int*) = nullptr;
  nvmlReturn_t (*get_handle)(unsigned int, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*get_name)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*get_driver)(char*, unsigned int) = nullptr;
  nvmlReturn_t (*get_util)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*get_memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*get_clock)(nvmlDevice_t, int, unsigned int*) = nullptr;
  nvmlReturn_t (*get_power)(nvmlDevice_t, unsigned int*) = nullptr;  // milliwatts
  nvmlReturn_t (*get_throttle)(nvmlDevice_t, unsigned long long*) = nullptr;
};

namespace {

template <typename F>
void load(void* lib, F& fn, const char* name) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
}

nvmlDevice_t handle(const Nvml::Api& api, int index) {
  nvmlDevice_t d = nullptr;
  if (index < 0 || api.get_handle(static_cast<unsigned>(index), &d) != kNvmlSuccess) return nullptr;
  return d;
}

}  // namespace

std::vector<std::string> throttle_reason_names(uint64_t bits) {
  // nvmlClocksEventReason* (called nvmlClocksThrottleReason* before driver 535).
  static constexpr std::array<const char*, 9> kNames = {
      "idle",                 // 0x001 GpuIdle: nothing to run, clocks down on purpose
      "applications clocks",  // 0x002 ApplicationsClocksSetting: capped by nvidia-smi -ac
      "power cap",            // 0x004 SwPowerCap: the usual one under full load
      "hw slowdown",          // 0x008 HwSlowdown: thermal or power-brake assertion by hardware
      "sync boost",           // 0x010 SyncBoost: held to another GPU's clock
      "thermal",              // 0x020 SwThermalSlowdown: driver lowers clocks for temperature
      "hw thermal",           // 0x040 HwThermalSlowdown
      "power brake",          // 0x080 HwPowerBrakeSlowdown: external power brake
      "display clocks",       // 0x100 DisplayClockSetting
  };
  std::vector<std::string> out;
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (bits & (uint64_t{1} << i)) out.emplace_back(kNames[i]);
  }
  if (bits >> kNames.size()) out.emplace_back("other");
  return out;
}

std::unique_ptr<Nvml> Nvml::open() {
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return nullptr;
  auto api = std::make_unique<Api>();
  load(lib, api->init, "nvmlInit_v2");
  load(lib, api->shutdown, "nvmlShutdown");
  load(lib, api->get_count, "nvmlDeviceGetCount_v2");
  load(lib, api->get_handle, "nvmlDeviceGetHandleByIndex_v2");
  load(lib, api->get_name, "nvmlDeviceGetName");
  load(lib, api->get_driver, "nvmlSystemGetDriverVersion");
  load(lib, api->get_util, "nvmlDeviceGetUtilizationRates");
  load(lib, api->get_memory, "nvmlDeviceGetMemoryInfo");
  load(lib, api->get_clock, "nvmlDeviceGetClockInfo");
  load(lib, api->get_power, "nvmlDeviceGetPowerUsage");
  // Renamed in newer drivers; the old name is still exported by them, but prefer the new one.
  load(lib, api->get_throttle, "nvmlDeviceGetCurrentClocksEventReasons");
  if (!api->get_throttle) load(lib, api->get_throttle, "nvmlDeviceGetCurrentClocksThrottleReasons");

  const bool complete = api->init && api->shutdown && api->get_count && api->get_handle &&
                        api->get_name && api->get_driver && api->get_util && api->get_memory &&
                        api->get_clock && api->get_power;  // throttle reasons are optional
  if (!complete || api->init() != kNvmlSuccess) {
    dlclose(lib);
    return nullptr;
  }
  std::unique_ptr<Nvml> n(new Nvml());
  n->lib_ = lib;
  n->api_ = std::move(api);
  return n;
}

Nvml::~Nvml() {
  if (api_) api_->shutdown();
  if (lib_) dlclose(lib_);
}

int Nvml::device_count() const {
  unsigned int n = 0;
  return api_->get_count(&n) == kNvmlSuccess ? static_cast<int>(n) : 0;
}

std::string Nvml::driver_version() const {
  char buf[96] = {};
  return api_->get_driver(buf, sizeof buf) == kNvmlSuccess ? std::string(buf) : std::string();
}

std::optional<NvmlInfo> Nvml::info(int index) const {
  nvmlDevice_t d = handle(*api_, index);
  if (!d) return std::nullopt;
  NvmlInfo i;
  i.index = index;
  char name[96] = {};
  if (api_->get_name(d, name, sizeof name) == kNvmlSuccess) i.name = name;
  i.driver_version = driver_version();
  nvmlMemory_t m{};
  if (api_->get_memory(d, &m) == kNvmlSuccess) i.memory_total_bytes = m.total;
  return i;
}

std::optional<GpuReading> Nvml::read(int index) const {
  nvmlDevice_t d = handle(*api_, index);
  if (!d) return std::nullopt;
  GpuReading r;
  nvmlUtilization_t u{};
  if (api_->get_util(d, &u) == kNvmlSuccess) {
    r.busy_pct = u.gpu;
    r.mem_busy_pct = u.memory;
  }
  nvmlMemory_t m{};
  if (api_->get_memory(d, &m) == kNvmlSuccess) r.mem_used_mb = static_cast<double>(m.used) / 1e6;
  unsigned int v = 0;
  if (api_->get_clock(d, kNvmlClockSm, &v) == kNvmlSuccess) r.sm_clock_mhz = v;
  if (api_->get_power(d, &v) == kNvmlSuccess) r.power_w = v / 1000.0;
  unsigned long long bits = 0;
  if (api_->get_throttle && api_->get_throttle(d, &bits) == kNvmlSuccess) r.throttle = bits;
  return r;
}

std::optional<NvmlInfo> nvml_query(int index) {
  auto nvml = Nvml::open();
  if (!nvml) return std::nullopt;
  return nvml->info(index);
}

std::vector<NvmlInfo> nvml_query_all() {
  std::vector<NvmlInfo> out;
  auto nvml = Nvml::open();
  if (!nvml) return out;
  for (int i = 0, n = nvml->device_count(); i < n; ++i) {
    if (auto info = nvml->info(i)) out.push_back(*info);
  }
  return out;
}

}  // namespace tb
