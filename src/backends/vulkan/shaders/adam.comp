#version 450
// Adam over the flat parameter array (ops/optimizer.h), the step count t = updates + 1 read from
// the cursor. The bias corrections 1 - beta^t lose digits to cancellation while beta^t is near
// 1 (Adam's first steps, beta2 = 0.999); without float64 (Apple GPUs have none) they come from
// series for log(1 - d) and exp(x) - 1, d = 1 - beta, accurate to float there.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats p;
  Floats g;
  Floats m;
  Floats v;
  Cursor at;
  uint count;
  float lr;
  float b1;
  float b2;
  float eps;
  float wd;
} pc;

// 1 - beta^t for beta in (0, 1).
float one_minus_pow(float beta, float t) {
  const float d = 1.0 - beta;
  float l = 0.0, term = d;  // log(1 - d) = -(d + d^2/2 + d^3/3 + ...); log itself where d is large
  if (d > 0.5) l = log(beta);
  for (int i = 1; i <= 64 && d <= 0.5; ++i) {
    const float add = term / float(i);
    l -= add;
    if (add < 1e-9 * -l) break;
    term *= d;
  }
  const float x = t * l;  // log(beta^t) <= 0
  if (x < -0.5) return 1.0 - exp(x);
  float sum = 0.0, xn = x;  // -(exp(x) - 1) = -(x + x^2/2! + ...)
  for (int i = 1; i <= 12; ++i) {
    sum += xn;
    xn *= x / float(i + 1);
  }
  return -sum;
}

shared float inv_bc[2];

void main() {
  // Once per workgroup: the series cost more than a parameter's update.
  if (gl_LocalInvocationIndex == 0u) {
    const float t = float(pc.at.updates + 1l);
    inv_bc[0] = 1.0 / one_minus_pow(pc.b1, t);
    inv_bc[1] = 1.0 / one_minus_pow(pc.b2, t);
  }
  barrier();
  const float inv_bc1 = inv_bc[0], inv_bc2 = inv_bc[1];
  const uint stride = gl_NumWorkGroups.x * 256u;
  for (uint i = gl_GlobalInvocationID.x; i < pc.count; i += stride) {
    const float p = pc.p.v[i];
    const float gi = pc.g.v[i] + pc.wd * p;
    const float m = pc.b1 * pc.m.v[i] + (1.0 - pc.b1) * gi;
    const float v = pc.b2 * pc.v.v[i] + (1.0 - pc.b2) * gi * gi;
    pc.m.v[i] = m;
    pc.v.v[i] = v;
    pc.p.v[i] = p - pc.lr * (m * inv_bc1) / (sqrt(v * inv_bc2) + pc.eps);
  }
}
