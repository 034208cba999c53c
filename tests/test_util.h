// Helpers every test folder uses: the relative error that numeric checks compare against their
// tolerances, seeded uniform values, and a self-removing temporary directory.
#pragma once
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace tb::testing {

// n values drawn uniformly from [lo, hi) by a generator seeded with seed.
inline std::vector<float> uniform(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// Relative L2 error ||got - want|| / ||want||; infinite where either side holds a NaN/inf (an
// unwritten, poisoned output) and where want is all zero but got is not.
inline double rel_err(const float* got, const float* want, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(want[i])) return INFINITY;
    const double d = double(got[i]) - double(want[i]);
    num += d * d, den += double(want[i]) * want[i];
  }
  return den == 0 ? (num == 0 ? 0 : INFINITY) : std::sqrt(num / den);
}
inline double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  return got.size() != want.size() ? INFINITY : rel_err(got.data(), want.data(), got.size());
}

// Maps [n, c, hw] between NCHW and NHWC (to_nhwc: NCHW in, NHWC out; else the reverse), for
// tests that feed a backend's NHWC ops NCHW data. T: float, or int32 moved as bits.
template <typename T>
void transpose_maps(const T* in, T* out, int64_t n, int64_t c, int64_t hw, bool to_nhwc) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t p = 0; p < hw; ++p) {
        const int64_t nchw = (i * c + ch) * hw + p, nhwc = (i * hw + p) * c + ch;
        out[to_nhwc ? nhwc : nchw] = in[to_nhwc ? nchw : nhwc];
      }
}

// A fresh directory under the system temp directory, removed with everything in it.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    path = std::filesystem::temp_directory_path() /
           ("tb_test_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + "_" +
            std::to_string(now));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

}  // namespace tb::testing
