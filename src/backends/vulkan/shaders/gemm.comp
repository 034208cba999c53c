#version 450
// Strided GEMM for the dense layer: A(m, k) = a[m * sam + k * sak], B(k, n) = b[k * sbk + n * sbn],
// C(m, n) = c[m * scm + n], with the bias over n (flags & 1) and a ReLU (flags & 2) fused into the
// store. dense.cpp sets the strides for y = x W^T + b, dx = dy W and dW = dy^T x. Split K
// (kchunk < K): the z-th partial result goes to c + z * M * scm.
#include "common.glsl"
layout(push_constant) uniform PC {
  Floats a;
  Floats b;
  Floats c;
  Floats bias;
  uint M;
  uint N;
  uint K;
  uint sam;
  uint sak;
  uint sbk;
  uint sbn;
  uint scm;
  uint flags;
  uint kchunk;
} pc;

#define GEMM_M pc.M
#define GEMM_N pc.N
#define GEMM_K pc.K
#define GEMM_KCHUNK pc.kchunk
#define GEMM_A_ALONG_K (pc.sak == 1u)
#define GEMM_B_ALONG_K (pc.sbk == 1u)
float load_a(uint m, uint k) {
  return pc.a.v[m * pc.sam + k * pc.sak];
}
float load_b(uint k, uint n) {
  return pc.b.v[k * pc.sbk + n * pc.sbn];
}
void store_c(uint m, uint n, float v) {
  if ((pc.flags & 1u) != 0u) v += pc.bias.v[n];
  if ((pc.flags & 2u) != 0u) v = max(v, 0.0);
  pc.c.v[gl_WorkGroupID.z * pc.M * pc.scm + m * pc.scm + n] = v;
}
#include "gemm_core.glsl"
