#include "bench/backend_gemm.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace tb {

GemmMeasurement measure_backend_gemm(Backend& be, int64_t n, double seconds_budget) {
  using Clock = std::chrono::steady_clock;
  const size_t bytes = size_t(n) * size_t(n) * sizeof(float);
  auto* x = static_cast<float*>(be.alloc(be.ctx, bytes));
  auto* w = static_cast<float*>(be.alloc(be.ctx, bytes));
  auto* y = static_cast<float*>(be.alloc(be.ctx, bytes));
  // Non-zero inputs: some units run faster on zeros than on real data.
  std::vector<float> host(size_t(n) * size_t(n));
  for (size_t i = 0; i < host.size(); ++i) host[i] = float((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
  be.upload(be.ctx, x, host.data(), bytes);
  be.upload(be.ctx, w, host.data(), bytes);
  OpCache cache;
  const DenseDims d{n, n, n};
  be.dense_forward(be.ctx, cache, d, x, w, nullptr, y, false);  // warm-up: plans, clocks
  be.synchronize(be.ctx);
  GemmMeasurement g;
  g.n = n;
  double best = 1e30;
  const auto start = Clock::now();
  while (g.runs < 50 &&
         std::chrono::duration<double>(Clock::now() - start).count() < seconds_budget) {
    const auto t0 = Clock::now();
    for (int k = 0; k < 4; ++k) be.dense_forward(be.ctx, cache, d, x, w, nullptr, y, false);
    be.synchronize(be.ctx);
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count() / 4);
    ++g.runs;
  }
  for (float* p : {x, w, y}) be.free(be.ctx, p);
  g.flops_per_s = d.flops_forward() / best;
  g.impl = be.name;
  g.source = fmt::format("measured: {} dense_forward {}^3 {}, best of {} x 4", be.name, n,
                         precision_name(be.precision), g.runs);
  return g;
}

}  // namespace tb
