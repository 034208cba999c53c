#include "bench/sampler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <thread>
#include <vector>

namespace tb {
namespace {

using namespace std::chrono_literals;

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

// Spins `threads` threads for `d`.
void spin(int threads, std::chrono::duration<double> d) {
  std::atomic<bool> done{false};
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i) {
    ts.emplace_back([&] {
      volatile double x = 1;
      while (!done.load(std::memory_order_relaxed)) x = x * 1.0000001 + 1e-9;
    });
  }
  std::this_thread::sleep_for(d);
  done = true;
  for (auto& t : ts) t.join();
}

TEST(Sampler, BusyThenIdle) {
  Sampler s({.rate_hz = 10});
  const auto t0 = std::chrono::steady_clock::now();
  s.set_phase("busy");
  const double cpu0 = process_cpu_seconds();
  // Twice as many threads as CPUs, so that we still get most of the machine when other
  // processes compete for it (CFS shares by thread).
  spin(2 * s.usable_cpus(), 600ms);
  const double busy_wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double expected_busy_pct =
      100 * (process_cpu_seconds() - cpu0) / busy_wall / s.usable_cpus();
  s.set_phase("idle");
  std::this_thread::sleep_for(600ms);
  s.stop();
  const double duration =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const nlohmann::json j = s.to_json();
  const auto& timeline = j["timeline"];
  const double expected_samples = duration * s.rate_hz();
  EXPECT_GE(timeline.size(), 0.7 * expected_samples);
  EXPECT_LE(timeline.size(), 1.3 * expected_samples);

  const auto& by_phase = j["mean"]["by_phase"];
  ASSERT_TRUE(by_phase.contains("busy")) << by_phase.dump();
  ASSERT_TRUE(by_phase.contains("idle")) << by_phase.dump();
  const double busy = by_phase["busy"]["proc_cpu_pct"];
  const double idle = by_phase["idle"]["proc_cpu_pct"];
  // The sampler agrees with the process's own CPU clock over the busy phase.
  EXPECT_NEAR(busy, expected_busy_pct, 15) << by_phase.dump();
  EXPECT_LT(idle, 20) << by_phase.dump();
  EXPECT_GT(busy, idle + 0.5 * expected_busy_pct) << by_phase.dump();
  // On a quiet machine the spinning threads get the CPUs. On a contended one (a parallel build
  // beside the tests) they get only their share, which the check above still covers.
  if (expected_busy_pct > 60) {
    EXPECT_GT(busy, 50) << by_phase.dump();
  } else {
    std::printf("[sampler] contended machine: the busy phase got %.0f%% of the CPUs\n",
                expected_busy_pct);
  }
  EXPECT_GT(double(by_phase["busy"]["cpu_busy_pct"]), 50);  // the machine saw it too

  // Timeline entries are in time order, labelled, with a value per CPU.
  double prev_t = 0;
  for (const auto& e : timeline) {
    EXPECT_GT(double(e["t"]), prev_t);
    prev_t = e["t"];
    const std::string phase = e["phase"];
    EXPECT_TRUE(phase == "busy" || phase == "idle") << phase;
    EXPECT_FALSE(e["core_busy_pct"].empty());
    EXPECT_GE(double(e["rss_mb"]), 1.0);
  }
  EXPECT_EQ(timeline.front()["phase"], "busy");
  EXPECT_EQ(timeline.back()["phase"], "idle");
}

TEST(Sampler, JsonShapeAndNoGpuWithoutNvml) {
  Sampler s({.rate_hz = 20, .gpu_index = 0});
  std::this_thread::sleep_for(300ms);
  s.stop();
  s.stop();  // idempotent
  const nlohmann::json j = s.to_json();
  for (const char* key :
       {"rate_hz", "samples", "usable_cpus", "sample_cost_us", "mean", "timeline"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["rate_hz"], 20.0);
  EXPECT_TRUE(j["mean"].contains("cpu_busy_pct"));
  EXPECT_TRUE(j["mean"]["by_phase"].contains("none"));  // nothing labelled yet
  EXPECT_FALSE(j["timeline"].empty());
  if (!s.has_gpu()) {
    EXPECT_FALSE(j["mean"].contains("gpu_busy_pct"));
    EXPECT_FALSE(j["timeline"][0].contains("gpu_busy_pct"));
  } else {
    EXPECT_TRUE(j["timeline"][0].contains("gpu_busy_pct"));
    EXPECT_TRUE(j["timeline"][0].contains("gpu_mem_used_mb"));
  }
}

TEST(Sampler, RateHasAFloorOfFive) {
  Sampler s({.rate_hz = 1});
  EXPECT_EQ(s.rate_hz(), 5);
}

TEST(Sampler, ThrottleReasonNames) {
  EXPECT_TRUE(throttle_reason_names(0).empty());
  EXPECT_EQ(throttle_reason_names(0x4), std::vector<std::string>{"power cap"});
  EXPECT_EQ(throttle_reason_names(0x1 | 0x20 | 0x40),
            (std::vector<std::string>{"idle", "thermal", "hw thermal"}));
  EXPECT_EQ(throttle_reason_names(0x1000), std::vector<std::string>{"other"});
}

TEST(Sampler, NvmlQueryIsOptional) {
  // No driver: nullopt, not an error. With one: a name and some memory.
  if (auto info = nvml_query(0)) {
    EXPECT_FALSE(info->name.empty());
    EXPECT_GT(info->memory_total_bytes, 0u);
  }
  EXPECT_FALSE(nvml_query(-1).has_value());
}

}  // namespace
}  // namespace tb
