#version 450
// db[o] = sum over rows of dy[i, o], rows in order (the dense layer's bias gradient).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats dy;
  Floats db;
  uint rows;
  uint cols;
} pc;

void main() {
  const uint stride = gl_NumWorkGroups.x * 256u;
  for (uint o = gl_GlobalInvocationID.x; o < pc.cols; o += stride) {
    float acc = 0.0;
    for (uint i = 0u; i < pc.rows; ++i) acc += pc.dy.v[i * pc.cols + o];
    pc.db.v[o] = acc;
  }
}
