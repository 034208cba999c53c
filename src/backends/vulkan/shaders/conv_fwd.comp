#version 450
// y[n, k, i, j] = sum over (c, r, s) of W[k, c, r, s] x[n, c, i*stride - pad + r, j*stride - pad + s]:
// M = k, N = n*oh*ow, K = c*r*s; the input patch gathered as B is loaded (zero outside the map).
#include "conv_common.glsl"
#define GEMM_M pc.k
#define GEMM_N (pc.n * pc.oh * pc.ow)
#define GEMM_K (pc.c * pc.r * pc.s)
#define GEMM_A_ALONG_K true  // W's rows; B's columns run along the output row (ow)
float load_a(uint m, uint kk) {
  return pc.w.v[m * GEMM_K + kk];
}
float load_b(uint kk, uint col) {
  const uint rs = pc.r * pc.s, ohw = pc.oh * pc.ow;
  const uint ch = kk / rs, tap = kk - ch * rs, r = tap / pc.s, s = tap - r * pc.s;
  const uint img = col / ohw, p = col - img * ohw, i = p / pc.ow, j = p - i * pc.ow;
  const int hh = int(i * pc.stride + r) - int(pc.pad), ww = int(j * pc.stride + s) - int(pc.pad);
  if (hh < 0 || hh >= int(pc.h) || ww < 0 || ww >= int(pc.wd)) return 0.0;
  return pc.x.v[((img * pc.c + ch) * pc.h + uint(hh)) * pc.wd + uint(ww)];
}
void store_c(uint m, uint col, float v) {
  const uint ohw = pc.oh * pc.ow, img = col / ohw, p = col - img * ohw;
  pc.y.v[(img * pc.k + m) * ohw + p] = v;
}
#include "gemm_core.glsl"
