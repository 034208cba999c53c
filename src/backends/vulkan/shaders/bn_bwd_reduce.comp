#version 450
// Batch norm backward, the per-channel sums: dbeta = sum dy, dgamma = sum dy * xhat, a workgroup
// per channel in a fixed tree. relu != 0: dy is the fused ReLU's, dz where z > 0, else 0.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats x;
  Floats dy;
  Floats z;
  Floats mean;
  Floats invstd;
  Floats dgamma;
  Floats dbeta;
  uint n;
  uint c;
  uint hw;
  uint relu;
} pc;

shared float red[256];

void main() {
  const uint t = gl_LocalInvocationID.x, m = pc.n * pc.hw;
  for (uint ch = gl_WorkGroupID.x; ch < pc.c; ch += gl_NumWorkGroups.x) {
    const float mu = pc.mean.v[ch], inv = pc.invstd.v[ch];
    float sd = 0.0, sdx = 0.0;
    for (uint e = t; e < m; e += 256u) {
      const uint img = e / pc.hw, i = e - img * pc.hw, at = (img * pc.c + ch) * pc.hw + i;
      float g = pc.dy.v[at];
      if (pc.relu != 0u && !(pc.z.v[at] > 0.0)) g = 0.0;
      sd += g;
      sdx += g * ((pc.x.v[at] - mu) * inv);
    }
    float sum_dy, sum_dy_xhat;
    TB_REDUCE_256(red, t, sd, sum_dy)
    TB_REDUCE_256(red, t, sdx, sum_dy_xhat)
    if (t == 0u) {
      pc.dbeta.v[ch] = sum_dy;
      pc.dgamma.v[ch] = sum_dy_xhat;
    }
  }
}
