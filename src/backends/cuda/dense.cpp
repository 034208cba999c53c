// Dense layer on cuBLASLt, forward and backward.
//
// Row-major math through column-major cuBLASLt: a row-major [r, c] matrix is the column-major
// [c, r] one, so with x [n, in], W [out, in], y [n, out] row-major:
//   forward  y^T [out, n]  = W [out, in] . x^T [in, n]      A = W  (stored in x out, op T)
//   dX       dX^T [in, n]  = W^T [in, out] . dY^T [out, n]  A = W  (stored in x out, op N)
//   dW       dW^T [in, out] = x^T [in, n] . dY [n, out]     B = dY (stored out x n, op T)
// The forward fuses bias (+ ReLU) as the BIAS / RELU_BIAS epilogue; db is the BGRADB epilogue of
// the dW product (bias length = columns of D = out, reduced over k = n). Where cuBLASLt offers no
// algorithm for an epilogue (or the bias pointer is too misaligned for it), a small kernel does it.
//
// bf16: A and B are bf16 copies (bf16.cu) of the fp32 operands made before each call, the weights
// from the parameter array's bf16 mirror where they lie in it; D, the bias and the bias gradient
// stay fp32, the products accumulate in fp32 on bf16 tensor cores. A layer whose sizes (in, out)
// are not multiples of 8 runs in tf32 instead: its bf16 rows would not start on 16-byte
// boundaries, which cuBLASLt's bf16 tensor-core kernels want (ResNet's classifier, 10 classes).
//
// Each product is planned once per node and shape (descriptors, layouts, the heuristic's algo) and
// cached in the node's OpCache. The heuristic depends on pointer alignment, so the plan records
// the alignments it assumed and is rebuilt if a later call passes a less aligned pointer.
#include <algorithm>
#include <cstdint>

#include "backends/cuda/cublaslt.h"
#include "backends/cuda/cuda_context.h"

namespace tb::cuda {
namespace {

uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a == 0) return 256;
  const uintptr_t low = a & (~a + 1);
  return uint32_t(std::min<uintptr_t>(low, 256));
}

// One column-major product D[m, n] = op(A) op(B), D fp32, A and B fp32 or bf16, with an optional
// epilogue.
struct Gemm {
  cublasOperation_t ta, tb;
  int64_t m, n, k, lda, ldb, ldd;
  cublasLtEpilogue_t epilogue;  // DEFAULT, BIAS, RELU_BIAS or BGRADB
  bool bf16;                    // A and B in bf16
};

struct MatmulPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool built = false;
  bool epilogue_ok = false;          // the fused epilogue was accepted; else a kernel does its part
  uint32_t align[4] = {0, 0, 0, 0};  // A, B, D, bias as planned
  Gemm gemm{};                       // what was planned (for a re-plan without the epilogue)

  void release() {
    if (desc) cublaslt().MatmulDescDestroy(desc);
    if (la) cublaslt().MatrixLayoutDestroy(la);
    if (lb) cublaslt().MatrixLayoutDestroy(lb);
    if (ld) cublaslt().MatrixLayoutDestroy(ld);
    desc = nullptr, la = lb = ld = nullptr;
    built = false;
  }
  ~MatmulPlan() { release(); }

  bool still_fits(const void* a, const void* b, const void* d, const void* bias) const {
    return built && alignment_of(a) >= align[0] && alignment_of(b) >= align[1] &&
           alignment_of(d) >= align[2] && (!bias || alignment_of(bias) >= align[3]);
  }
};

// Tries to plan g with its epilogue; returns false when no algorithm supports the epilogue (the
// caller then plans DEFAULT and runs a kernel), throws on any other failure.
bool try_plan(Context& cx, MatmulPlan& p, const Gemm& g, const void* a, const void* b,
              const void* d, const void* bias, const char* op, const DenseDims& dims) {
  p.release();
  // bf16 inputs run on tensor cores under plain 32F compute; fp32 inputs need FAST_TF32 for them
  // (tf32 runs, and a bf16 run's layers that stay fp32).
  const cublasComputeType_t compute =
      !g.bf16 && cx.tensor_cores() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cudaDataType_t ab = g.bf16 ? CUDA_R_16BF : CUDA_R_32F;
  TB_CUBLAS_CHECK(cublaslt().MatmulDescCreate(&p.desc, compute, CUDA_R_32F), op, shape_str(dims));
  TB_CUBLAS_CHECK(
      cublaslt().MatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &g.ta, sizeof(g.ta)),
      op, shape_str(dims));
  TB_CUBLAS_CHECK(
      cublaslt().MatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &g.tb, sizeof(g.tb)),
      op, shape_str(dims));
  TB_CUBLAS_CHECK(cublaslt().MatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                    &g.epilogue, sizeof(g.epilogue)),
                  op, shape_str(dims));
  if (g.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    // The heuristic reads the pointer's value for its alignment.
    TB_CUBLAS_CHECK(cublaslt().MatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                      &bias, sizeof(bias)),
                    op, shape_str(dims));
  }
  // Stored shapes: op(A) is m x k, so A is stored k x m when transposed.
  const bool at = g.ta == CUBLAS_OP_T, bt = g.tb == CUBLAS_OP_T;
  TB_CUBLAS_CHECK(cublaslt().MatrixLayoutCreate(&p.la, ab, at ? g.k : g.m, at ? g.m : g.k, g.lda),
                  op, shape_str(dims));
  TB_CUBLAS_CHECK(cublaslt().MatrixLayoutCreate(&p.lb, ab, bt ? g.n : g.k, bt ? g.k : g.n, g.ldb),
                  op, shape_str(dims));
  TB_CUBLAS_CHECK(cublaslt().MatrixLayoutCreate(&p.ld, CUDA_R_32F, g.m, g.n, g.ldd), op,
                  shape_str(dims));

  p.align[0] = alignment_of(a);
  p.align[1] = alignment_of(b);
  p.align[2] = alignment_of(d);
  p.align[3] = alignment_of(bias);
  cublasLtMatmulPreference_t pref = nullptr;
  TB_CUBLAS_CHECK(cublaslt().MatmulPreferenceCreate(&pref), op, shape_str(dims));
  const uint64_t ws = cx.workspace_bytes;
  cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                          sizeof(ws));
  cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                          &p.align[0], sizeof(uint32_t));
  cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                          &p.align[1], sizeof(uint32_t));
  cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                          &p.align[2], sizeof(uint32_t));
  cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                          &p.align[2], sizeof(uint32_t));
  cublasLtMatmulHeuristicResult_t res[4] = {};
  int found = 0;
  cublasStatus_t s = cublaslt().MatmulAlgoGetHeuristic(cx.lt, p.desc, p.la, p.lb, p.ld, p.ld, pref,
                                                       4, res, &found);
  cublaslt().MatmulPreferenceDestroy(pref);
  int pick = -1;
  if (s == CUBLAS_STATUS_SUCCESS)
    for (int i = 0; i < found; ++i)
      if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= cx.workspace_bytes) {
        pick = i;
        break;
      }
  if (pick < 0) {
    if (g.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
      p.release();
      return false;
    }
    if (s != CUBLAS_STATUS_SUCCESS)
      fail_cublas(s, "cublasLtMatmulAlgoGetHeuristic", op, shape_str(dims), __FILE__, __LINE__);
    fail_msg(op, shape_str(dims), "cublasLtMatmulAlgoGetHeuristic found no algorithm");
  }
  p.algo = res[pick].algo;
  p.gemm = g;
  p.built = true;
  p.epilogue_ok = g.epilogue != CUBLASLT_EPILOGUE_DEFAULT;
  return true;
}

// Plans g (with its epilogue when supported and `want_epilogue`), or reuses the plan.
void ensure_plan(Context& cx, MatmulPlan& p, Gemm g, bool want_epilogue, const void* a,
                 const void* b, const void* d, const void* bias, const char* op,
                 const DenseDims& dims) {
  if (p.still_fits(a, b, d, p.epilogue_ok ? bias : nullptr)) return;
  // A bias that is not 16-byte aligned goes to the kernel: the epilogue's vector loads want it.
  if (want_epilogue && alignment_of(bias) >= 16 && try_plan(cx, p, g, a, b, d, bias, op, dims))
    return;
  g.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  try_plan(cx, p, g, a, b, d, nullptr, op, dims);
}

void run_plan(Context& cx, MatmulPlan& p, const void* a, const void* b, void* d, const void* bias,
              const char* op, const DenseDims& dims) {
  if (p.epilogue_ok)
    TB_CUBLAS_CHECK(cublaslt().MatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                      &bias, sizeof(bias)),
                    op, shape_str(dims));
  const float one = 1.f, zero = 0.f;
  cublasStatus_t s = cublaslt().Matmul(cx.lt, p.desc, &one, a, p.la, b, p.lb, &zero, d, p.ld, d,
                                       p.ld, &p.algo, cx.workspace, cx.workspace_bytes, cx.stream);
  if (s == CUBLAS_STATUS_NOT_SUPPORTED && p.epilogue_ok) {
    // The heuristic offered the fused epilogue but the launch refused it: plan without it for
    // good; the caller's kernel then does the epilogue's part (it checks p.epilogue_ok after).
    Gemm g = p.gemm;
    g.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    try_plan(cx, p, g, a, b, d, nullptr, op, dims);
    s = cublaslt().Matmul(cx.lt, p.desc, &one, a, p.la, b, p.lb, &zero, d, p.ld, d, p.ld, &p.algo,
                          cx.workspace, cx.workspace_bytes, cx.stream);
  }
  if (s != CUBLAS_STATUS_SUCCESS)
    fail_cublas(s, "cublasLtMatmul", op, shape_str(dims), __FILE__, __LINE__);
}

struct DenseCache {
  DenseDims dims;
  bool bf16 = false;     // bf16 operands: a bf16 run, in and out multiples of 8
  MatmulPlan fwd[2][2];  // [relu_after][with bias]
  MatmulPlan dx;
  MatmulPlan dw[2];  // [with db]
};

DenseCache& cache_for(const Context& cx, OpCache& c, const DenseDims& d, const char* op) {
  if (auto* dc = c.get<DenseCache>()) {
    check_cache_dims(op, dc->dims, d);
    return *dc;
  }
  auto* dc = c.set(new DenseCache());
  dc->dims = d;
  dc->bf16 = bf16_layer(cx, c, d.in, d.out);
  return *dc;
}

void dense_forward(void* ctx, OpCache& c, const DenseDims& d, const float* x, const float* w,
                   const float* b, float* y, bool relu_after) {
  static const char* op = "dense_forward";
  Context& cx = context(ctx);
  DenseCache& dc = cache_for(cx, c, d, op);
  if (d.n == 0 || d.out == 0) return;
  MatmulPlan& p = dc.fwd[relu_after ? 1 : 0][b ? 1 : 0];
  cublasLtEpilogue_t epi = b ? (relu_after ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                             : (relu_after ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT);
  const Gemm g{CUBLAS_OP_T, CUBLAS_OP_N, d.out, d.n, d.in, d.in, d.in, d.out, epi, dc.bf16};
  const void* x_in = x;
  const void* w_in = w;
  if (dc.bf16) {
    const auto h = bf16_operands(cx, {d.n * d.in, d.out * d.in, 0}, op);
    launch_to_bf16(cx, x, h[0], d.n * d.in);
    w_in = weights16(cx, w, d.out * d.in, h[1]);
    x_in = h[0];
  }
  if (b) {
    ensure_plan(cx, p, g, true, w_in, x_in, y, b, op, d);
  } else if (!p.still_fits(w_in, x_in, y, nullptr)) {
    // RELU alone reads no bias; DEFAULT when there is nothing to fuse or RELU is not offered.
    if (!(relu_after && try_plan(cx, p, g, w_in, x_in, y, nullptr, op, d))) {
      Gemm g0 = g;
      g0.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
      try_plan(cx, p, g0, w_in, x_in, y, nullptr, op, d);
    }
  }
  run_plan(cx, p, w_in, x_in, y, b, op, d);
  if (!p.epilogue_ok && (b || relu_after)) launch_bias_act(cx, d.n, d.out, b, relu_after, y);
}

void dense_backward(void* ctx, OpCache& c, const DenseDims& d, const float* x, const float* w,
                    const float* dy, float* dx, float* dw, float* db) {
  static const char* op = "dense_backward";
  Context& cx = context(ctx);
  DenseCache& dc = cache_for(cx, c, d, op);
  if (d.n == 0) {  // nothing flowed back: the gradients are zero
    if (dw) launch_fill(cx, dw, 0.f, d.out * d.in);
    if (db) launch_fill(cx, db, 0.f, d.out);
    return;
  }
  const void* x_in = x;
  const void* w_in = w;
  const void* dy_in = dy;
  if (dc.bf16) {
    const auto h = bf16_operands(cx, {d.n * d.in, d.out * d.in, d.n * d.out}, op);
    if (dw) launch_to_bf16(cx, x, h[0], d.n * d.in);
    if (dx) w_in = weights16(cx, w, d.out * d.in, h[1]);
    launch_to_bf16(cx, dy, h[2], d.n * d.out);
    x_in = h[0], dy_in = h[2];
  }
  if (dx) {
    const Gemm g{
        CUBLAS_OP_N, CUBLAS_OP_N, d.in, d.n, d.out, d.in, d.out, d.in, CUBLASLT_EPILOGUE_DEFAULT,
        dc.bf16};
    ensure_plan(cx, dc.dx, g, false, w_in, dy_in, dx, nullptr, op, d);
    run_plan(cx, dc.dx, w_in, dy_in, dx, nullptr, op, d);
  }
  if (dw) {
    MatmulPlan& p = dc.dw[db ? 1 : 0];
    const Gemm g{
        CUBLAS_OP_N, CUBLAS_OP_T, d.in,
        d.out,       d.n,         d.in,
        d.out,       d.in,        db ? CUBLASLT_EPILOGUE_BGRADB : CUBLASLT_EPILOGUE_DEFAULT,
        dc.bf16};
    ensure_plan(cx, p, g, db != nullptr, x_in, dy_in, dw, db, op, d);
    run_plan(cx, p, x_in, dy_in, dw, db, op, d);
    if (db && !p.epilogue_ok) launch_column_sum(cx, d.n, d.out, dy, db);
  } else if (db) {
    launch_column_sum(cx, d.n, d.out, dy, db);
  }
}

}  // namespace

void register_dense(Backend& b) {
  b.dense_forward = dense_forward;
  b.dense_backward = dense_backward;
}

}  // namespace tb::cuda
