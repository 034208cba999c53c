// Push constants of the three convolution shaders (implicit GEMM on gemm_core.glsl, NCHW
// activations, KCRS weights; ops/conv2d.h).
#include "common.glsl"
layout(push_constant) uniform PC {
  Floats x;  // the input (forward, weights) or dy (data)
  Floats w;  // the weights (forward, data) or dy (weights)
  Floats y;  // the output: y, dx or dW
  uint n;
  uint c;
  uint h;
  uint wd;
  uint k;
  uint r;
  uint s;
  uint stride;
  uint pad;
  uint oh;
  uint ow;
  uint kchunk;  // split K (the weights' gradient): see gemm_core.glsl
} pc;
