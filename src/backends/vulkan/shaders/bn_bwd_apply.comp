#version 450
// Batch norm backward, the input gradient from the channel sums bn_bwd_reduce left in dgamma and
// dbeta: dx = gamma * invstd * (dy - sum_dy / m - xhat * sum_dy_xhat / m).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats x;
  Floats dy;
  Floats z;
  Floats gamma;
  Floats mean;
  Floats invstd;
  Floats dgamma;
  Floats dbeta;
  Floats dx;
  uint count;
  uint c;
  uint hw;
  uint relu;
  float inv_m;
} pc;

void main() {
  const uint stride = gl_NumWorkGroups.x * 256u;
  for (uint e = gl_GlobalInvocationID.x; e < pc.count; e += stride) {
    const uint ch = (e / pc.hw) % pc.c;
    float g = pc.dy.v[e];
    if (pc.relu != 0u && !(pc.z.v[e] > 0.0)) g = 0.0;
    const float inv = pc.invstd.v[ch], xhat = (pc.x.v[e] - pc.mean.v[ch]) * inv;
    pc.dx.v[e] = pc.gamma.v[ch] * inv *
                 (g - pc.dbeta.v[ch] * pc.inv_m - xhat * pc.dgamma.v[ch] * pc.inv_m);
  }
}
