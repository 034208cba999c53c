#version 450
// Softmax cross-entropy, forward, backward and metrics in one pass (ops/softmax_ce.h): one
// workgroup, a thread per row, the loss and correct counts summed in a fixed tree and added to
// metrics by one thread (no atomics: the same bits every run).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats z;
  Ints labels;
  Floats dz;  // 0: evaluation, no gradient
  Floats metrics;
  uint n;
  uint k;
  float scale;
} pc;

shared float red[256];

void main() {
  const uint t = gl_LocalInvocationID.x;
  const bool grad = uint64_t(pc.dz) != 0ul;
  float loss = 0.0, right = 0.0;
  for (uint row = t; row < pc.n; row += 256u) {
    const uint base = row * pc.k;
    float best = pc.z.v[base];
    uint best_i = 0u;
    for (uint c = 1u; c < pc.k; ++c) {
      const float v = pc.z.v[base + c];
      if (v > best) best = v, best_i = c;
    }
    float sum = 0.0;
    for (uint c = 0u; c < pc.k; ++c) sum += exp(pc.z.v[base + c] - best);
    const float log_sum = log(sum) + best;
    const int label = pc.labels.v[row];
    const bool valid = label >= 0 && uint(label) < pc.k;
    loss += valid ? log_sum - pc.z.v[base + uint(label)] : uintBitsToFloat(0x7fc00000u);
    right += (valid && best_i == uint(label)) ? 1.0 : 0.0;
    if (grad)
      for (uint c = 0u; c < pc.k; ++c)
        pc.dz.v[base + c] =
            (exp(pc.z.v[base + c] - log_sum) - (int(c) == label ? 1.0 : 0.0)) * pc.scale;
  }
  float loss_sum, right_sum;
  TB_REDUCE_256(red, t, loss, loss_sum)
  TB_REDUCE_256(red, t, right, right_sum)
  if (t == 0u) {
    pc.metrics.v[0] += loss_sum;
    pc.metrics.v[1] += right_sum;
  }
}
