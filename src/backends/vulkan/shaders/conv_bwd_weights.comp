#version 450
// dW[k, c, r, s] = sum over (n, i, j) of dy[n, k, i, j] x[n, c, i*stride - pad + r,
// j*stride - pad + s]: M = k, N = c*r*s, K = n*oh*ow. Here pc.w is dy and pc.y is dW, or with K
// split (a few output tiles over a long K) the partial results that sum_splits adds into dW.
#include "conv_common.glsl"
#define GEMM_M pc.k
#define GEMM_N (pc.c * pc.r * pc.s)
#define GEMM_K (pc.n * pc.oh * pc.ow)
#define GEMM_KCHUNK pc.kchunk
#define GEMM_A_ALONG_K true  // dy's maps
#define GEMM_B_ALONG_K true  // x along the output row
float load_a(uint m, uint kk) {
  const uint ohw = pc.oh * pc.ow, img = kk / ohw, p = kk - img * ohw;
  return pc.w.v[(img * pc.k + m) * ohw + p];
}
float load_b(uint kk, uint col) {
  const uint rs = pc.r * pc.s, ohw = pc.oh * pc.ow;
  const uint ch = col / rs, tap = col - ch * rs, r = tap / pc.s, s = tap - r * pc.s;
  const uint img = kk / ohw, p = kk - img * ohw, i = p / pc.ow, j = p - i * pc.ow;
  const int hh = int(i * pc.stride + r) - int(pc.pad), ww = int(j * pc.stride + s) - int(pc.pad);
  if (hh < 0 || hh >= int(pc.h) || ww < 0 || ww >= int(pc.wd)) return 0.0;
  return pc.x.v[((img * pc.c + ch) * pc.h + uint(hh)) * pc.wd + uint(ww)];
}
void store_c(uint m, uint col, float v) {
  pc.y.v[(gl_WorkGroupID.z * GEMM_M + m) * GEMM_N + col] = v;
}
#include "gemm_core.glsl"
