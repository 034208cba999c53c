#version 450
// The training step's last op: ops/batch.h's advance() on the cursor.
#include "common.glsl"
layout(local_size_x = 1) in;
layout(push_constant) uniform PC {
  Cursor c;
} pc;

void main() {
  pc.c.step += 1l;
  pc.c.updates += 1l;
}
