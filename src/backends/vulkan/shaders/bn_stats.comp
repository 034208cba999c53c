#version 450
// Batch norm's training statistics (ops/batchnorm.h): a workgroup per channel, the mean and then
// the centred sum of squares (two passes, as the reference, so the variance keeps its digits),
// each summed in a fixed tree; thread 0 writes save_mean, save_invstd and the running statistics.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats x;
  Floats mean;
  Floats invstd;
  Floats rmean;
  Floats rvar;
  uint n;
  uint c;
  uint hw;
  float eps;
  float momentum;
} pc;

shared float red[256];

void main() {
  const uint t = gl_LocalInvocationID.x, m = pc.n * pc.hw;
  for (uint ch = gl_WorkGroupID.x; ch < pc.c; ch += gl_NumWorkGroups.x) {
    float part = 0.0;
    for (uint e = t; e < m; e += 256u) {
      const uint img = e / pc.hw, i = e - img * pc.hw;
      part += pc.x.v[(img * pc.c + ch) * pc.hw + i];
    }
    float sum;
    TB_REDUCE_256(red, t, part, sum)
    const float mu = sum / float(m);
    part = 0.0;
    for (uint e = t; e < m; e += 256u) {
      const uint img = e / pc.hw, i = e - img * pc.hw;
      const float d = pc.x.v[(img * pc.c + ch) * pc.hw + i] - mu;
      part += d * d;
    }
    float sq;
    TB_REDUCE_256(red, t, part, sq)
    if (t == 0u) {
      const float var = sq / float(m);
      pc.mean.v[ch] = mu;
      pc.invstd.v[ch] = 1.0 / sqrt(var + pc.eps);
      const float unbiased = m > 1u ? sq / float(m - 1u) : var;
      pc.rmean.v[ch] = (1.0 - pc.momentum) * pc.rmean.v[ch] + pc.momentum * mu;
      pc.rvar.v[ch] = (1.0 - pc.momentum) * pc.rvar.v[ch] + pc.momentum * unbiased;
    }
  }
}
