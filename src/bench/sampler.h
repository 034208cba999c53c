// The utilisation sampler: one thread beside the run that, rate_hz times a second, reads
//   - machine CPU busy % (all CPUs and per CPU) from /proc/stat deltas,
//   - this process's CPU % of the CPUs it may use (sched_getaffinity), from the kernel's
//     nanosecond process clock (the tick counts of /proc/self/stat are too coarse at 10 Hz),
//   - this process's resident memory from /proc/self/statm,
//   - and, when asked for a GPU and NVML is there: GPU busy %, memory, SM clock, power, and the
//     clocks-event ("throttle") reasons.
// The run labels what it is doing with set_phase("load" / "train" / "test"); a sample covers the
// period that ends at its t and carries the label that was current in the middle of that period.
//
// It observes, never drives, the run. It owns everything it uses (no global state); the
// destructor stops and joins the thread. Cost: one sample reads two small /proc files (and makes
// six NVML calls); Sampler::cost() reports what it actually took (about 50 us on 2 CPUs without
// a GPU, about 0.3 ms with an H100's NVML).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench/nvml.h"

namespace tb {

struct SamplerOptions {
  double rate_hz = 10;   // at least 5 (WORKLOADS.md); lower values are raised to 5
  int gpu_index = -1;    // NVIDIA GPU to read through NVML; -1: no GPU sampling
  bool per_core = true;  // per-CPU busy % in every timeline entry (the mean always has it)
};

struct Sample {
  double t = 0;             // seconds since the sampler started
  uint16_t phase = 0;       // index into Sampler::phases()
  float cpu_busy_pct = 0;   // all CPUs of the machine (not only ours): user+nice+system+irq
  float cpu_steal_pct = 0;  // time a hypervisor gave our virtual CPUs to someone else
  float proc_cpu_pct = 0;   // this process: CPU seconds / wall seconds / usable CPUs x 100
  float rss_mb = 0;
  std::vector<float> core_busy_pct;  // per CPU, in /proc/stat order
  std::optional<GpuReading> gpu;
};

struct SampleCost {
  double mean_s = 0, max_s = 0;  // wall time of one sample (reading and storing)
  int64_t count = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplerOptions opt = {});
  ~Sampler();  // stops and joins
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Label for the samples from now on. Cheap (a mutex and a short string compare); call it
  // between steps, not inside them.
  void set_phase(std::string_view phase);
  // Stops sampling (takes a last sample when more than half a period has passed since the
  // previous one). Idempotent.
  void stop();

  double rate_hz() const { return opt_.rate_hz; }
  bool has_gpu() const { return nvml_ != nullptr; }
  int usable_cpus() const { return usable_cpus_; }
  std::vector<Sample> samples() const;
  std::vector<std::string> phases() const;
  SampleCost cost() const;

  // {"rate_hz", "samples", "sample_cost_us": {"mean","max"}, "usable_cpus",
  //  "mean": {<overall means>, "by_phase": {"train": {...}, ...}},
  //  "timeline": [{"t","phase","cpu_busy_pct","proc_cpu_pct","rss_mb",["core_busy_pct"],
  //                ["gpu_busy_pct","gpu_mem_busy_pct","gpu_mem_used_mb","gpu_sm_clock_mhz",
  //                 "gpu_power_w","gpu_throttle"]}, ...]}
  // GPU keys appear only when a GPU was read. Means of "gpu_throttle" are the fraction of
  // samples in which each reason was active.
  nlohmann::json to_json() const;

  struct Reader;  // the open /proc files and the previous counters (sampler.cpp)

 private:
  void loop();
  void take_sample();
  uint16_t phase_at(double t) const;  // needs mu_

  SamplerOptions opt_;
  int usable_cpus_ = 1;
  std::chrono::steady_clock::time_point start_;
  std::unique_ptr<Reader> reader_;  // used only by the sampler thread after construction
  std::unique_ptr<Nvml> nvml_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  bool stop_ = false;
  uint16_t phase_ = 0;
  std::vector<std::string> phases_;
  std::vector<std::pair<double, uint16_t>> phase_changes_;  // (t, phase), in time order
  std::vector<Sample> samples_;
  SampleCost cost_;
  std::thread thread_;
};

}  // namespace tb
