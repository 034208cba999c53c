#include "train/init.h"

#include <cmath>
#include <random>

namespace tb {

void init_parameters(const Model& m, uint64_t seed, float* params, float* state) {
  std::mt19937_64 rng(seed);
  for (const Node& n : m.nodes) {
    float* p = n.param_offset >= 0 ? params + n.param_offset : nullptr;
    switch (n.init) {
      case Init::none:
        break;
      case Init::glorot_uniform:
      case Init::torch_linear: {
        const int64_t fan_in = m.nodes[n.in0].out_size(), fan_out = n.c;
        const int64_t weights = fan_in * fan_out;
        const double a = n.init == Init::glorot_uniform ? std::sqrt(6.0 / double(fan_in + fan_out))
                                                        : 1.0 / std::sqrt(double(fan_in));
        std::uniform_real_distribution<float> u(float(-a), float(a));
        for (int64_t i = 0; i < weights; ++i) p[i] = u(rng);
        if (n.bias)
          for (int64_t i = 0; i < fan_out; ++i)
            p[weights + i] = n.init == Init::glorot_uniform ? 0.f : u(rng);
        break;
      }
      case Init::kaiming_normal_fan_out: {
        const double fan_out = double(n.c) * n.kernel * n.kernel;
        std::normal_distribution<float> g(0.f, float(std::sqrt(2.0 / fan_out)));
        for (int64_t i = 0; i < n.param_count; ++i) p[i] = g(rng);
        break;
      }
      case Init::batchnorm: {
        for (int c = 0; c < n.c; ++c) p[c] = 1.f, p[n.c + c] = 0.f;
        float* s = state + n.state_offset;
        for (int c = 0; c < n.c; ++c) s[c] = 0.f, s[n.c + c] = 1.f;
        break;
      }
    }
  }
}

}  // namespace tb
