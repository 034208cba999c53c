#version 450
// Max pooling backward without atomics: a thread per input value gathers dy from the outputs
// whose window holds it and whose argmax names it, in increasing output order, which is the
// order the reference scatters in: the same sums to the bit.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats dy;
  Ints argmax;
  Floats dx;
  uint nc;
  uint h;
  uint w;
  uint oh;
  uint ow;
  uint kernel;
  uint stride;
  uint pad;
} pc;

// The outputs along one axis whose window [o*stride - pad, o*stride - pad + kernel) holds p.
uvec2 window_outputs(uint p, uint outs) {
  const int lo_num = int(p + pc.pad) - int(pc.kernel) + 1;
  const uint lo = lo_num <= 0 ? 0u : (uint(lo_num) + pc.stride - 1u) / pc.stride;
  const uint hi = min((p + pc.pad) / pc.stride + 1u, outs);  // one past the last
  return uvec2(lo, hi);
}

void main() {
  const uint total = pc.nc * pc.h * pc.w, step = gl_NumWorkGroups.x * 256u;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += step) {
    const uint ww = e % pc.w, hh = (e / pc.w) % pc.h, plane = e / (pc.w * pc.h);
    const uvec2 is = window_outputs(hh, pc.oh), js = window_outputs(ww, pc.ow);
    float acc = 0.0;
    for (uint i = is.x; i < is.y; ++i)
      for (uint j = js.x; j < js.y; ++j) {
        const uint o = (plane * pc.oh + i) * pc.ow + j;
        if (pc.argmax.v[o] == int(e)) acc += pc.dy.v[o];
      }
    pc.dx.v[e] = acc;
  }
}
