// The tiled GEMM every dense and convolution shader runs: C[M, N] = sum_k A[m, k] B[k, n], 64x64
// tiles of C per workgroup of 16x16 threads (4x4 values each, strided by 16 so neighbouring threads
// touch neighbouring values), K in steps of 16 through shared memory (8 KB). The includer defines
// GEMM_M, GEMM_N, GEMM_K and load_a(m, k), load_b(k, n), store_c(m, n, v); loads are called only
// inside [0, M) x [0, K) and [0, K) x [0, N). Each value sums k in order 0 .. K-1: the same bits on
// every run. Tiles beyond the grid's 65,535 per dimension are walked by the workgroups in a loop.
// Split K (where the includer defines GEMM_KCHUNK): workgroup z sums k in [z * GEMM_KCHUNK,
// (z + 1) * GEMM_KCHUNK) and store_c puts it in the z-th partial result; sum_splits.comp adds the
// partials in order z = 0, 1, ..., so the split sums are as repeatable as the plain ones.
// GEMM_A_ALONG_K / GEMM_B_ALONG_K (default false): the operand is contiguous along k, so
// neighbouring threads load neighbouring k (coalesced reads on a GPU); else along m (n). The
// shared tiles are padded by one column so that k-wise stores do not all hit one bank.
layout(local_size_x = 16, local_size_y = 16) in;
#ifndef GEMM_KCHUNK
#define GEMM_KCHUNK GEMM_K
#endif
#ifndef GEMM_A_ALONG_K
#define GEMM_A_ALONG_K false
#endif
#ifndef GEMM_B_ALONG_K
#define GEMM_B_ALONG_K false
#endif

const uint TM = 64u, TN = 64u, TK = 16u;
shared float As[TK][TM + 1u];
shared float Bs[TK][TN + 1u];

void main() {
  const uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, tid = ty * 16u + tx;
  const uint M = GEMM_M, N = GEMM_N;
  const uint k_begin = gl_WorkGroupID.z * GEMM_KCHUNK, K = min(GEMM_K, k_begin + GEMM_KCHUNK);
  const uint tiles_m = (M + TM - 1u) / TM, tiles_n = (N + TN - 1u) / TN;
  for (uint bm = gl_WorkGroupID.y; bm < tiles_m; bm += gl_NumWorkGroups.y) {
    for (uint bn = gl_WorkGroupID.x; bn < tiles_n; bn += gl_NumWorkGroups.x) {
      float acc[4][4];
      for (uint i = 0u; i < 4u; ++i)
        for (uint j = 0u; j < 4u; ++j) acc[i][j] = 0.0;
      for (uint k0 = k_begin; k0 < K; k0 += TK) {
        for (uint l = 0u; l < 4u; ++l) {
          const uint e = tid + l * 256u;
          const bool a_k = GEMM_A_ALONG_K, b_k = GEMM_B_ALONG_K;
          const uint ka = a_k ? e % TK : e / TM, ma = a_k ? e / TK : e % TM;
          const uint gm = bm * TM + ma, gka = k0 + ka;
          float a = 0.0;
          if (gm < M && gka < K) a = load_a(gm, gka);
          As[ka][ma] = a;
          const uint kb = b_k ? e % TK : e / TN, nb = b_k ? e / TK : e % TN;
          const uint gn = bn * TN + nb, gkb = k0 + kb;
          float b = 0.0;
          if (gn < N && gkb < K) b = load_b(gkb, gn);
          Bs[kb][nb] = b;
        }
        barrier();
        for (uint kk = 0u; kk < TK; ++kk) {
          float a[4], b[4];
          for (uint i = 0u; i < 4u; ++i) a[i] = As[kk][ty + 16u * i];
          for (uint j = 0u; j < 4u; ++j) b[j] = Bs[kk][tx + 16u * j];
          for (uint i = 0u; i < 4u; ++i)
            for (uint j = 0u; j < 4u; ++j) acc[i][j] += a[i] * b[j];
        }
        barrier();
      }
      for (uint i = 0u; i < 4u; ++i)
        for (uint j = 0u; j < 4u; ++j) {
          const uint m = bm * TM + ty + 16u * i, n = bn * TN + tx + 16u * j;
          if (m < M && n < N) store_c(m, n, acc[i][j]);
        }
    }
  }
}
