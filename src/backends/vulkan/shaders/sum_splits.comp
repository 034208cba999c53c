#version 450
// The partial results of a split-K GEMM added in split order: y[i] = sum over z of part[z][i].
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats part;
  Floats y;
  uint count;
  uint splits;
} pc;

void main() {
  const uint stride = gl_NumWorkGroups.x * 256u;
  for (uint i = gl_GlobalInvocationID.x; i < pc.count; i += stride) {
    float acc = 0.0;
    for (uint z = 0u; z < pc.splits; ++z) acc += pc.part.v[z * pc.count + i];
    pc.y.v[i] = acc;
  }
}
