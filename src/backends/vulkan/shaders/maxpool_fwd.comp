#version 450
// Max pooling (ops/pool.h): a thread per output; padded cells never win, the first maximum does.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform PC {
  Floats x;
  Floats y;
  Ints argmax;
  uint nc;
  uint h;
  uint w;
  uint oh;
  uint ow;
  uint kernel;
  uint stride;
  uint pad;
} pc;

void main() {
  const uint total = pc.nc * pc.oh * pc.ow, step = gl_NumWorkGroups.x * 256u;
  for (uint o = gl_GlobalInvocationID.x; o < total; o += step) {
    const uint j = o % pc.ow, i = (o / pc.ow) % pc.oh, plane = o / (pc.ow * pc.oh);
    float best = 0.0;
    int best_at = -1;
    for (uint r = 0u; r < pc.kernel; ++r) {
      const int hh = int(i * pc.stride + r) - int(pc.pad);
      if (hh < 0 || hh >= int(pc.h)) continue;
      for (uint s = 0u; s < pc.kernel; ++s) {
        const int ww = int(j * pc.stride + s) - int(pc.pad);
        if (ww < 0 || ww >= int(pc.w)) continue;
        const int at = int((plane * pc.h + uint(hh)) * pc.w + uint(ww));
        const float v = pc.x.v[at];
        if (best_at < 0 || v > best) best = v, best_at = at;
      }
    }
    pc.y.v[o] = best_at < 0 ? uintBitsToFloat(0xff800000u) : best;
    pc.argmax.v[o] = best_at;
  }
}
