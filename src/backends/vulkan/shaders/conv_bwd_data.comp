#version 450
// dx[n, c, h, w] = sum over (k, r, s) of W[k, c, r, s] dy[n, k, (h + pad - r) / stride,
// (w + pad - s) / stride] where that divides and lands in the output: M = c, N = n*h*w,
// K = k*r*s. Here pc.x is dy and pc.y is dx.
#include "conv_common.glsl"
#define GEMM_M pc.c
#define GEMM_N (pc.n * pc.h * pc.wd)
#define GEMM_K (pc.k * pc.r * pc.s)
#define GEMM_A_ALONG_K (pc.r * pc.s > 1u)  // a filter's taps; a 1x1's W is contiguous along c
float load_a(uint m, uint kk) {
  const uint rs = pc.r * pc.s, kout = kk / rs, tap = kk - kout * rs;
  return pc.w.v[(kout * pc.c + m) * rs + tap];
}
float load_b(uint kk, uint col) {
  const uint rs = pc.r * pc.s, hw = pc.h * pc.wd;
  const uint kout = kk / rs, tap = kk - kout * rs, r = tap / pc.s, s = tap - r * pc.s;
  const uint img = col / hw, p = col - img * hw, hh = p / pc.wd, ww = p - hh * pc.wd;
  const int th = int(hh + pc.pad) - int(r), tw = int(ww + pc.pad) - int(s);
  if (th < 0 || tw < 0) return 0.0;
  const uint i = uint(th) / pc.stride, j = uint(tw) / pc.stride;
  if (i * pc.stride != uint(th) || j * pc.stride != uint(tw) || i >= pc.oh || j >= pc.ow)
    return 0.0;
  return pc.x.v[((img * pc.k + kout) * pc.oh + i) * pc.ow + j];
}
void store_c(uint m, uint col, float v) {
  const uint hw = pc.h * pc.wd, img = col / hw, p = col - img * hw;
  pc.y.v[(img * pc.c + m) * hw + p] = v;
}
#include "gemm_core.glsl"
