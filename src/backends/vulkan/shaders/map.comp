#version 450
// Elementwise: op 0 relu (y = max(a, 0)), 1 relu backward (y = a > 0 ? b : 0, a the forward's
// output), 2 add (y = a + b). y may alias a or b.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats a;
  Floats b;
  Floats y;
  uint count;
  uint op;
} pc;

void main() {
  const uint stride = gl_NumWorkGroups.x * 256u;
  for (uint i = gl_GlobalInvocationID.x; i < pc.count; i += stride) {
    const float a = pc.a.v[i];
    float r;
    if (pc.op == 0u) {
      r = a > 0.0 ? a : 0.0;
    } else if (pc.op == 1u) {
      r = a > 0.0 ? pc.b.v[i] : 0.0;
    } else {
      r = a + pc.b.v[i];
    }
    pc.y.v[i] = r;
  }
}
