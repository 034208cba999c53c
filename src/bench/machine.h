// What machine a result came from: CPU (model, cores, the ISA oneDNN dispatches, the vector
// features the peak estimate needs), memory, OS, GPUs and library versions.
// Every reader tolerates missing files (containers, VMs, non-Linux /proc layouts): a field it
// cannot learn stays at its default ("", 0, false) rather than failing the run.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace tb {

struct CpuInfo {
  std::string model;   // brand string, "AMD EPYC 7763 64-Core Processor"; never empty
  std::string vendor;  // "GenuineIntel", "AuthenticAMD"; "" off x86
  int family = 0;      // x86 display family (0x19 = AMD Zen 3/4, 6 = Intel Core/Xeon)
  int model_number = 0;
  int logical_cpus = 1;    // online CPUs of the machine
  int usable_cpus = 1;     // CPUs this process may run on (sched_getaffinity)
  int physical_cores = 1;  // distinct cores among the usable CPUs (SMT siblings share FMA units)
  std::string isa;         // what oneDNN dispatches: "avx2", "avx512_core", "avx512_core_amx"
  bool avx2 = false, fma = false, avx512f = false, avx512_bf16 = false, amx_bf16 = false;
  double max_mhz = 0;      // 0 when unknown
  std::string mhz_source;  // "cpufreq cpuinfo_max_freq", "/proc/cpuinfo cpu MHz" or ""
};

struct MachineInfo {
  std::string hostname;
  std::string os;      // "Debian GNU/Linux 12 (bookworm)", else uname's sysname
  std::string kernel;  // uname release
  std::string arch;    // uname machine, "x86_64"
  CpuInfo cpu;
  uint64_t memory_bytes = 0;
};

CpuInfo cpu_info();
MachineInfo machine_info();

nlohmann::json to_json(const CpuInfo& c);
// machine_info() plus "gpus" (through NVML, empty without it) and "versions": trainbench and
// its git revision, oneDNN (version, hash, threading runtime), compiler, glibc, fmt, json.
nlohmann::json machine_json();

}  // namespace tb
