#version 450
// Global average pooling over x [rows, hw]: backward 0, y[row] = mean of its hw values (summed
// in order); backward 1, dx[row, i] = dy[row] / hw.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats src;
  Floats dst;
  uint rows;
  uint hw;
  uint backward;
} pc;

void main() {
  const uint step = gl_NumWorkGroups.x * 256u;
  if (pc.backward == 0u) {
    for (uint row = gl_GlobalInvocationID.x; row < pc.rows; row += step) {
      float acc = 0.0;
      for (uint i = 0u; i < pc.hw; ++i) acc += pc.src.v[row * pc.hw + i];
      pc.dst.v[row] = acc / float(pc.hw);
    }
  } else {
    const uint total = pc.rows * pc.hw;
    for (uint e = gl_GlobalInvocationID.x; e < total; e += step)
      pc.dst.v[e] = pc.src.v[e / pc.hw] / float(pc.hw);
  }
}
