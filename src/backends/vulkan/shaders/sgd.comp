#version 450
// SGD with momentum (ops/optimizer.h), operation for operation as ref::sgd_update.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats p;
  Floats g;
  Floats buf;
  uint count;
  float lr;
  float momentum;
  float wd;
  uint nesterov;
} pc;

void main() {
  const uint stride = gl_NumWorkGroups.x * 256u;
  for (uint i = gl_GlobalInvocationID.x; i < pc.count; i += stride) {
    float gi = pc.g.v[i] + pc.wd * pc.p.v[i];
    if (pc.momentum != 0.0) {
      const float b = pc.momentum * pc.buf.v[i] + gi;
      pc.buf.v[i] = b;
      gi = pc.nesterov != 0u ? gi + pc.momentum * b : b;
    }
    pc.p.v[i] -= pc.lr * gi;
  }
}
