#include "bench/sampler.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <limits>
#include <map>

namespace tb {

// ---------------------------------------------------------------------------------------------
// Reading /proc. The files stay open and are re-read from offset 0 each time: procfs generates
// them afresh on every read, and re-opening would double the syscalls.

namespace {

using Clock = std::chrono::steady_clock;

// One "cpu" line of /proc/stat, in USER_HZ ticks.
struct CpuTicks {
  uint64_t busy = 0;   // user + nice + system + irq + softirq (guest time is inside user)
  uint64_t idle = 0;   // idle + iowait: waiting on the disk is not work either
  uint64_t steal = 0;  // a VM's virtual CPU was runnable but the host ran someone else
};

int usable_cpu_count() {
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

// Precise CPU time of the whole process (all threads), in seconds. /proc/self/stat's
// utime + stime count 10 ms ticks: at 10 Hz on 2 CPUs that quantises the process CPU % into 5%
// steps, so we ask the kernel's nanosecond accounting for the same quantity instead.
double process_cpu_seconds() {
  timespec ts{};
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0;
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

// Rounds to `digits` decimals, dividing last so that the JSON shows 98.3, not 98.30000000000001.
double round_to(double x, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(x * scale) / scale;
}
double r1(double x) {
  return round_to(x, 1);
}

}  // namespace

struct Sampler::Reader {
  int stat_fd = -1, statm_fd = -1;
  std::string buf;
  long page_size = 4096;
  std::vector<CpuTicks> prev;  // [0]: the "cpu" total line, then cpu0, cpu1, ...
  double prev_proc_s = 0;
  Clock::time_point prev_wall;

  Reader() {
    stat_fd = ::open("/proc/stat", O_RDONLY | O_CLOEXEC);
    statm_fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    page_size = std::max(1L, sysconf(_SC_PAGESIZE));
    buf.resize(16384);
  }
  ~Reader() {
    if (stat_fd >= 0) ::close(stat_fd);
    if (statm_fd >= 0) ::close(statm_fd);
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // Reads the whole file into buf (growing it); returns the length, 0 on failure.
  size_t read_all(int fd) {
    if (fd < 0) return 0;
    size_t len = 0;
    for (;;) {
      if (len == buf.size()) buf.resize(buf.size() * 2);
      ssize_t n = ::pread(fd, buf.data() + len, buf.size() - len, static_cast<off_t>(len));
      if (n < 0) return 0;
      if (n == 0) break;
      len += static_cast<size_t>(n);
    }
    return len;
  }

  // The "cpu" lines of /proc/stat; empty when it cannot be read.
  std::vector<CpuTicks> read_stat() {
    std::vector<CpuTicks> out;
    size_t len = read_all(stat_fd);
    const char* p = buf.data();
    const char* end = p + len;
    while (p + 3 < end && p[0] == 'c' && p[1] == 'p' && p[2] == 'u') {
      p += 3;
      while (p < end && *p != ' ') ++p;  // skip the cpu number
      uint64_t v[8] = {};
      char* q = const_cast<char*>(p);
      for (uint64_t& x : v) x = std::strtoull(q, &q, 10);  // missing fields (old kernels) are 0
      out.push_back({v[0] + v[1] + v[2] + v[5] + v[6], v[3] + v[4], v[7]});
      p = static_cast<const char*>(memchr(q, '\n', static_cast<size_t>(end - q)));
      if (!p) break;
      ++p;
    }
    return out;
  }

  double rss_mb() {
    size_t len = read_all(statm_fd);
    if (len == 0) return 0;
    buf[len] = '\0';  // read_all leaves room: len < buf.size() when it returns
    char* q = buf.data();
    std::strtoull(q, &q, 10);                            // size
    const uint64_t resident = std::strtoull(q, &q, 10);  // pages
    return static_cast<double>(resident) * static_cast<double>(page_size) / 1e6;
  }
};

// ---------------------------------------------------------------------------------------------

Sampler::Sampler(SamplerOptions opt) : opt_(opt) {
  opt_.rate_hz = std::max(5.0, opt_.rate_hz);
  usable_cpus_ = usable_cpu_count();
  if (opt_.gpu_index >= 0) {
    nvml_ = Nvml::open();
    if (nvml_ && opt_.gpu_index >= nvml_->device_count()) nvml_.reset();
    // One untimed read first: NVML sets things up lazily on the first calls. (On an H100 a sample
    // took 0.33 ms on average, ~10 ms at worst; first calls are the likely culprit.)
    if (nvml_) nvml_->read(opt_.gpu_index);
  }
  reader_ = std::make_unique<Reader>();
  phases_.emplace_back("none");  // until the run names one
  start_ = Clock::now();
  reader_->prev = reader_->read_stat();
  reader_->prev_proc_s = process_cpu_seconds();
  reader_->prev_wall = start_;
  thread_ = std::thread([this] { loop(); });
}

Sampler::~Sampler() {
  stop();
}

void Sampler::set_phase(std::string_view phase) {
  std::lock_guard lk(mu_);
  if (phases_[phase_] == phase) return;
  auto it = std::find(phases_.begin(), phases_.end(), phase);
  if (it == phases_.end()) {
    phases_.emplace_back(phase);
    it = phases_.end() - 1;
  }
  phase_ = static_cast<uint16_t>(it - phases_.begin());
  phase_changes_.push_back({std::chrono::duration<double>(Clock::now() - start_).count(), phase_});
}

void Sampler::stop() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Sampler::loop() {
  const auto period = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(1.0 / opt_.rate_hz));
  auto next = start_ + period;
  std::unique_lock lk(mu_);
  for (;;) {
    if (cv_.wait_until(lk, next, [this] { return stop_; })) break;
    lk.unlock();
    take_sample();
    lk.lock();
    // Ticks stay on the start + k x period grid; if we fell behind (a stalled machine), skip
    // the missed ones rather than firing a burst of near-empty intervals.
    next += period;
    const auto now = Clock::now();
    if (next <= now) next = now + period;
  }
  lk.unlock();
  // A last sample for the tail of the run, unless it would cover only a sliver of a period
  // (too few /proc/stat ticks to mean anything).
  if (Clock::now() - reader_->prev_wall >= period / 2) take_sample();
}

void Sampler::take_sample() {
  const auto t0 = Clock::now();
  Reader& r = *reader_;
  Sample s;
  s.t = std::chrono::duration<double>(t0 - start_).count();
  const double prev_t = std::chrono::duration<double>(r.prev_wall - start_).count();

  std::vector<CpuTicks> cur = r.read_stat();
  if (cur.size() == r.prev.size() && !cur.empty()) {
    auto pct = [](uint64_t part, uint64_t total) {
      return total ? static_cast<float>(100.0 * static_cast<double>(part) / total) : 0.0f;
    };
    auto delta = [](const CpuTicks& a, const CpuTicks& b) {
      return CpuTicks{a.busy - b.busy, a.idle - b.idle, a.steal - b.steal};
    };
    for (size_t i = 0; i < cur.size(); ++i) {
      const CpuTicks d = delta(cur[i], r.prev[i]);
      const uint64_t total = d.busy + d.idle + d.steal;
      if (i == 0) {
        s.cpu_busy_pct = pct(d.busy, total);
        s.cpu_steal_pct = pct(d.steal, total);
      } else {
        s.core_busy_pct.push_back(pct(d.busy, total));
      }
    }
  }
  r.prev = std::move(cur);  // a CPU going offline changes the count: skip one sample's values

  const double proc_s = process_cpu_seconds();
  const double wall_s = std::chrono::duration<double>(t0 - r.prev_wall).count();
  if (wall_s > 0) {
    s.proc_cpu_pct = static_cast<float>(100.0 * (proc_s - r.prev_proc_s) / wall_s / usable_cpus_);
  }
  r.prev_proc_s = proc_s;
  r.prev_wall = t0;
  s.rss_mb = static_cast<float>(r.rss_mb());
  if (nvml_) s.gpu = nvml_->read(opt_.gpu_index);

  std::lock_guard lk(mu_);
  s.phase = phase_at(0.5 * (prev_t + s.t));
  samples_.push_back(std::move(s));
  const double cost = std::chrono::duration<double>(Clock::now() - t0).count();
  cost_.mean_s += (cost - cost_.mean_s) / static_cast<double>(++cost_.count);
  cost_.max_s = std::max(cost_.max_s, cost);
}

// The phase current at time t (seconds since start). A sample is labelled with the phase at the
// middle of its period, so the sample that straddles "train" -> "test" goes to whichever had
// most of it, instead of always to the newer one.
uint16_t Sampler::phase_at(double t) const {
  for (auto it = phase_changes_.rbegin(); it != phase_changes_.rend(); ++it) {
    if (it->first <= t) return it->second;
  }
  return 0;
}

std::vector<Sample> Sampler::samples() const {
  std::lock_guard lk(mu_);
  return samples_;
}

std::vector<std::string> Sampler::phases() const {
  std::lock_guard lk(mu_);
  return phases_;
}

SampleCost Sampler::cost() const {
  std::lock_guard lk(mu_);
  return cost_;
}

// ---------------------------------------------------------------------------------------------
// JSON

namespace {

struct Mean {
  double sum = 0, max = -std::numeric_limits<double>::infinity();
  int64_t n = 0;
  void add(double x) {
    sum += x;
    max = std::max(max, x);
    ++n;
  }
  template <typename T>
  void add(const std::optional<T>& x) {
    if (x) add(static_cast<double>(*x));
  }
  double mean() const { return n ? sum / static_cast<double>(n) : 0; }
};

struct Means {
  int64_t n = 0;
  Mean cpu, steal, proc, rss;
  std::vector<Mean> cores;
  Mean gpu_busy, gpu_mem_busy, gpu_mem, gpu_clock, gpu_power;
  int64_t throttle_n = 0;
  std::map<std::string, int64_t> throttle;

  void add(const Sample& s) {
    ++n;
    cpu.add(s.cpu_busy_pct);
    steal.add(s.cpu_steal_pct);
    proc.add(s.proc_cpu_pct);
    rss.add(s.rss_mb);
    if (cores.size() < s.core_busy_pct.size()) cores.resize(s.core_busy_pct.size());
    for (size_t i = 0; i < s.core_busy_pct.size(); ++i) cores[i].add(s.core_busy_pct[i]);
    if (!s.gpu) return;
    gpu_busy.add(s.gpu->busy_pct);
    gpu_mem_busy.add(s.gpu->mem_busy_pct);
    gpu_mem.add(s.gpu->mem_used_mb);
    gpu_clock.add(s.gpu->sm_clock_mhz);
    gpu_power.add(s.gpu->power_w);
    if (s.gpu->throttle) {
      ++throttle_n;
      for (auto& name : throttle_reason_names(*s.gpu->throttle)) ++throttle[name];
    }
  }

  nlohmann::json to_json() const {
    nlohmann::json j = {{"samples", n},
                        {"cpu_busy_pct", r1(cpu.mean())},
                        {"cpu_steal_pct", r1(steal.mean())},
                        {"proc_cpu_pct", r1(proc.mean())},
                        {"rss_mb", r1(rss.mean())},
                        {"rss_mb_max", n ? r1(rss.max) : 0.0}};
    auto& c = j["core_busy_pct"] = nlohmann::json::array();
    for (const Mean& m : cores) c.push_back(r1(m.mean()));
    auto put = [&](const char* key, const Mean& m, bool with_max) {
      if (!m.n) return;
      j[key] = r1(m.mean());
      if (with_max) j[std::string(key) + "_max"] = r1(m.max);
    };
    put("gpu_busy_pct", gpu_busy, false);
    put("gpu_mem_busy_pct", gpu_mem_busy, false);
    put("gpu_mem_used_mb", gpu_mem, true);
    put("gpu_sm_clock_mhz", gpu_clock, false);
    put("gpu_power_w", gpu_power, true);
    if (throttle_n) {
      auto& t = j["gpu_throttle"] = nlohmann::json::object();
      for (auto& [name, count] : throttle) {
        t[name] = round_to(static_cast<double>(count) / static_cast<double>(throttle_n), 3);
      }
    }
    return j;
  }
};

}  // namespace

nlohmann::json Sampler::to_json() const {
  std::lock_guard lk(mu_);
  Means all;
  std::vector<Means> by_phase(phases_.size());
  nlohmann::json timeline = nlohmann::json::array();
  for (const Sample& s : samples_) {
    all.add(s);
    by_phase[s.phase].add(s);
    nlohmann::json e = {{"t", round_to(s.t, 3)},
                        {"phase", phases_[s.phase]},
                        {"cpu_busy_pct", r1(s.cpu_busy_pct)},
                        {"proc_cpu_pct", r1(s.proc_cpu_pct)},
                        {"rss_mb", r1(s.rss_mb)}};
    if (s.cpu_steal_pct > 0) e["cpu_steal_pct"] = r1(s.cpu_steal_pct);
    if (opt_.per_core) {
      auto& c = e["core_busy_pct"] = nlohmann::json::array();
      for (float v : s.core_busy_pct) c.push_back(r1(v));
    }
    if (s.gpu) {
      const GpuReading& g = *s.gpu;
      if (g.busy_pct) e["gpu_busy_pct"] = *g.busy_pct;
      if (g.mem_busy_pct) e["gpu_mem_busy_pct"] = *g.mem_busy_pct;
      if (g.mem_used_mb) e["gpu_mem_used_mb"] = r1(*g.mem_used_mb);
      if (g.sm_clock_mhz) e["gpu_sm_clock_mhz"] = *g.sm_clock_mhz;
      if (g.power_w) e["gpu_power_w"] = r1(*g.power_w);
      if (g.throttle) e["gpu_throttle"] = throttle_reason_names(*g.throttle);
    }
    timeline.push_back(std::move(e));
  }
  nlohmann::json mean = all.to_json();
  auto& phases = mean["by_phase"] = nlohmann::json::object();
  for (size_t i = 0; i < phases_.size(); ++i) {
    if (by_phase[i].n) phases[phases_[i]] = by_phase[i].to_json();
  }
  return {{"rate_hz", opt_.rate_hz},
          {"samples", samples_.size()},
          {"usable_cpus", usable_cpus_},
          {"sample_cost_us", {{"mean", r1(cost_.mean_s * 1e6)}, {"max", r1(cost_.max_s * 1e6)}}},
          {"mean", std::move(mean)},
          {"timeline", std::move(timeline)}};
}

}  // namespace tb
