#version 450
// Batch norm's normalisation, y = (x - mean) * invstd * gamma + beta, then (flags) + skip and a
// ReLU: the plain, BN+ReLU and BN+add+ReLU forwards. flags & 1: evaluation, `stat` holds the
// running variance (invstd from it); else `stat` is the batch's invstd. y may alias x or skip.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats x;
  Floats skip;
  Floats gamma;
  Floats beta;
  Floats mean;
  Floats stat;
  Floats y;
  uint count;
  uint c;
  uint hw;
  uint flags;  // 1 eval, 2 relu, 4 skip
  float eps;
} pc;

void main() {
  const uint stride = gl_NumWorkGroups.x * 256u;
  for (uint e = gl_GlobalInvocationID.x; e < pc.count; e += stride) {
    const uint ch = (e / pc.hw) % pc.c;
    const float inv = (pc.flags & 1u) != 0u ? 1.0 / sqrt(pc.stat.v[ch] + pc.eps) : pc.stat.v[ch];
    float v = (pc.x.v[e] - pc.mean.v[ch]) * inv * pc.gamma.v[ch] + pc.beta.v[ch];
    if ((pc.flags & 4u) != 0u) v += pc.skip.v[e];
    if ((pc.flags & 2u) != 0u) v = max(v, 0.0);
    pc.y.v[e] = v;
  }
}
