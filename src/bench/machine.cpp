#include "bench/machine.h"

#include <fmt/format.h>
#include <omp.h>
#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <oneapi/dnnl/dnnl.h>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "backends/cpu/cpu_context.h"
#include "bench/nvml.h"
#include "core/version.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define TB_X86 1
#endif
#if defined(__GLIBC__)
#include <gnu/libc-version.h>
#endif

namespace tb {

namespace {

std::optional<std::string> read_text(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string trim(std::string s) {
  const char* ws = " \t\r\n\"";
  s.erase(0, s.find_first_not_of(ws));
  s.erase(s.find_last_not_of(ws) + 1);
  return s;
}

// "key : value" lines of /proc/cpuinfo (and "KEY=value" of os-release): the first value of key.
std::string field(const std::string& text, const std::string& key, char sep) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const size_t colon = line.find(sep);
    if (colon == std::string::npos) continue;
    if (trim(line.substr(0, colon)) == key) return trim(line.substr(colon + 1));
  }
  return "";
}

#ifdef TB_X86
struct X86Features {
  std::string vendor, brand;
  int family = 0, model = 0;
  bool avx2 = false, fma = false, avx512f = false, avx512_bf16 = false, amx_bf16 = false;
};

uint64_t xgetbv0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t{hi} << 32) | lo;
}

// CPUID says what the silicon has; XCR0 says whether the OS saves the registers it needs.
// Both are needed: a VM or kernel may hide AVX-512 state even where the CPU has it.
X86Features x86_features() {
  X86Features f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  const unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf == 0) return f;
  __cpuid(0, a, b, c, d);
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  f.vendor = vendor;

  __cpuid(1, a, b, c, d);
  const int base_family = (a >> 8) & 0xf;
  f.family = base_family == 0xf ? base_family + ((a >> 20) & 0xff) : base_family;
  f.model = (a >> 4) & 0xf;
  if (base_family == 0x6 || base_family == 0xf) f.model |= ((a >> 16) & 0xf) << 4;
  const bool osxsave = c & (1u << 27);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;                 // XMM + YMM state
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask + ZMM state
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;         // XTILECFG + XTILEDATA
  f.fma = os_avx && (c & (1u << 12));
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = os_avx && (b & (1u << 5));
    f.avx512f = os_avx512 && (b & (1u << 16));
    f.amx_bf16 = os_amx && (d & (1u << 22));
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512_bf16 = f.avx512f && (a & (1u << 5));
  }
  if (unsigned(__get_cpuid_max(0x80000000, nullptr)) >= 0x80000004u) {
    unsigned regs[12];
    for (unsigned i = 0; i < 3; ++i) {
      __cpuid(0x80000002 + i, regs[4 * i], regs[4 * i + 1], regs[4 * i + 2], regs[4 * i + 3]);
    }
    char brand[49] = {};
    std::memcpy(brand, regs, 48);
    f.brand = trim(brand);
  }
  return f;
}
#endif

std::vector<int> usable_cpu_ids() {
  std::vector<int> ids;
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return ids;
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (CPU_ISSET(i, &set)) ids.push_back(i);
  }
#else  // no affinity masks (macOS): every CPU
  for (int i = 0; i < int(std::thread::hardware_concurrency()); ++i) ids.push_back(i);
#endif
  return ids;
}

// Distinct (package, core) pairs among the CPUs we may use; 0 when sysfs does not say.
int physical_cores_of(const std::vector<int>& cpus) {
  std::set<std::pair<std::string, std::string>> cores;
  for (int cpu : cpus) {
    const std::string dir = fmt::format("/sys/devices/system/cpu/cpu{}/topology/", cpu);
    auto pkg = read_text(dir + "physical_package_id");
    auto core = read_text(dir + "core_id");
    if (!pkg || !core) return 0;
    cores.emplace(trim(*pkg), trim(*core));
  }
  return static_cast<int>(cores.size());
}

const char* onednn_runtime_name(unsigned rt) {
  switch (rt) {
    case 0:
      return "none";
    case 1:
      return "sequential";
    case 2:
      return "openmp";
    case 4:
      return "tbb";
    case 8:
      return "threadpool";
    default:
      return "other";
  }
}

}  // namespace

CpuInfo cpu_info() {
  CpuInfo c;
  const std::string cpuinfo = read_text("/proc/cpuinfo").value_or("");
  c.model = field(cpuinfo, "model name", ':');
  std::string flags(" ");
  flags.append(field(cpuinfo, "flags", ':')).append(" ");
  auto kernel_has = [&](const char* name) {
    // The kernel may switch a feature off (clearcpuid=, no XSAVE support): respect it when
    // /proc/cpuinfo is there to ask.
    return flags.size() <= 2 || flags.find(std::string(" ") + name + " ") != std::string::npos;
  };
#ifdef TB_X86
  const X86Features f = x86_features();
  if (c.model.empty()) c.model = f.brand;
  c.vendor = f.vendor;
  c.family = f.family;
  c.model_number = f.model;
  c.avx2 = f.avx2 && kernel_has("avx2");
  c.fma = f.fma && kernel_has("fma");
  c.avx512f = f.avx512f && kernel_has("avx512f");
  c.avx512_bf16 = f.avx512_bf16 && kernel_has("avx512_bf16");
  c.amx_bf16 = f.amx_bf16 && kernel_has("amx_bf16");
#endif
  // Other architectures name the part differently (arm64: "Model", "Hardware", "CPU part").
  for (const char* key : {"Model", "Hardware", "cpu model", "CPU part"}) {
    if (c.model.empty()) c.model = field(cpuinfo, key, ':');
  }
  utsname u{};
  if (c.model.empty()) c.model = uname(&u) == 0 ? std::string("unknown ") + u.machine : "unknown";

  c.logical_cpus = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  const std::vector<int> cpus = usable_cpu_ids();
  c.usable_cpus = cpus.empty() ? std::max(1u, std::thread::hardware_concurrency())
                               : static_cast<int>(cpus.size());
  const int cores = physical_cores_of(cpus);
  c.physical_cores = cores > 0 ? cores : c.usable_cpus;
  c.isa = cpu::onednn_isa();

  // cpufreq knows the boost clock; inside VMs it is usually absent and /proc/cpuinfo's "cpu MHz"
  // is the nominal (TSC) clock, lower than what the cores actually run at under load.
  if (auto khz = read_text("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")) {
    c.max_mhz = std::atof(khz->c_str()) / 1000.0;
    if (c.max_mhz > 0) c.mhz_source = "cpufreq cpuinfo_max_freq";
  }
  if (c.max_mhz <= 0) {
    std::istringstream in(cpuinfo);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("cpu MHz", 0) != 0) continue;
      const size_t colon = line.find(':');
      if (colon != std::string::npos) c.max_mhz = std::max(c.max_mhz, std::atof(&line[colon + 1]));
    }
    c.mhz_source = c.max_mhz > 0 ? "/proc/cpuinfo cpu MHz" : "";
  }
  return c;
}

MachineInfo machine_info() {
  MachineInfo m;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) m.hostname = host;
  utsname u{};
  if (uname(&u) == 0) {
    m.os = u.sysname;
    m.kernel = u.release;
    m.arch = u.machine;
  }
  if (auto rel = read_text("/etc/os-release")) {
    const std::string pretty = field(*rel, "PRETTY_NAME", '=');
    if (!pretty.empty()) m.os = pretty;
  }
  m.cpu = cpu_info();
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) m.memory_bytes = static_cast<uint64_t>(pages) * page;
  return m;
}

nlohmann::json to_json(const CpuInfo& c) {
  return {{"model", c.model},
          {"vendor", c.vendor},
          {"family", c.family},
          {"model_number", c.model_number},
          {"logical_cpus", c.logical_cpus},
          {"usable_cpus", c.usable_cpus},
          {"physical_cores", c.physical_cores},
          {"isa", c.isa},
          {"avx2", c.avx2},
          {"fma", c.fma},
          {"avx512f", c.avx512f},
          {"avx512_bf16", c.avx512_bf16},
          {"amx_bf16", c.amx_bf16},
          {"max_mhz", c.max_mhz},
          {"mhz_source", c.mhz_source}};
}

nlohmann::json machine_json() {
  const MachineInfo m = machine_info();
  nlohmann::json gpus = nlohmann::json::array();
  for (const NvmlInfo& g : nvml_query_all()) {
    gpus.push_back({{"index", g.index},
                    {"name", g.name},
                    {"driver", g.driver_version},
                    {"memory_bytes", g.memory_total_bytes}});
  }

  const dnnl_version_t* v = dnnl_version();
  nlohmann::json versions = {
    {"onednn", fmt::format("{}.{}.{}", v->major, v->minor, v->patch)},
    {"onednn_hash", v->hash ? v->hash : ""},
    {"onednn_runtime", onednn_runtime_name(v->cpu_runtime)},
    {"openmp_max_threads", omp_get_max_threads()},
    {"fmt",
     fmt::format("{}.{}.{}", FMT_VERSION / 10000, FMT_VERSION / 100 % 100, FMT_VERSION % 100)},
    {"nlohmann_json", fmt::format("{}.{}.{}", NLOHMANN_JSON_VERSION_MAJOR,
                                  NLOHMANN_JSON_VERSION_MINOR, NLOHMANN_JSON_VERSION_PATCH)},
#if defined(__clang__)
    {"compiler", "clang " __clang_version__},
#elif defined(__GNUC__)
    {"compiler", "gcc " __VERSION__},
#else
    {"compiler", "unknown"},
#endif
#if defined(__GLIBC__)
    {"glibc", gnu_get_libc_version()},
#endif
#ifdef TRAINBENCH_VERSION
    {"trainbench", TRAINBENCH_VERSION},
#endif
    {"trainbench_git", git_revision()},
  };

  return {{"hostname", m.hostname},  {"os", m.os},
          {"kernel", m.kernel},      {"arch", m.arch},
          {"cpu", to_json(m.cpu)},   {"memory_bytes", m.memory_bytes},
          {"gpus", std::move(gpus)}, {"versions", std::move(versions)}};
}

}  // namespace tb
