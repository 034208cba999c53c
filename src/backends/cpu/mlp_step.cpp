// A one-hidden-layer MLP's whole training step in one parallel region (Backend::mlp_step), for
// steps so small that the op-by-op step's parallel regions, and the trips of the parameters and
// their Adam state between the cores' caches, cost as much as the arithmetic (fashion-mlp:
// batch 32 through 784 -> 128 -> 10, about 13 MFLOP a step).
//
// Each thread owns a contiguous slice of the hidden units: its rows of W1 and b1, their gradients
// and Adam state. It alone makes and reads them, every step, so they stay in its core's cache.
// Each also cuts the whole batch into a copy of its own: cutting a shared batch by halves made
// every store wait for the line to leave the other core's cache, which had read it the step
// before (and cost a barrier). The head (W2, b2: classes x hidden) is shared. Two barriers:
//   the batch cut by each thread into its copy (thread 0 also writes the labels);
//   h[:, slice] = max(x W1[slice]^T + b1[slice], 0)                       | barrier
//   thread 0: logits, the loss and its gradient, the head's gradients;
//   each thread: its columns of W2 copied, as the hidden gradient reads them | barrier
//   thread 0: the head's Adam
//   dh[:, slice] = (dlogits W2[:, slice]) where h > 0; dW1[slice] = dh[:, slice]^T x, db1[slice]
//   and their Adam
// The products are oneDNN matmuls made on the thread that runs them, with OpenMP's thread count
// at 1 there, so oneDNN plans each for one thread (a primitive planned for two would do only the
// first thread's share when called inside a parallel region). dW1 is made a block of rows at a
// time and each block's Adam runs while that gradient is in cache.
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <exception>
#include <map>
#include <unordered_map>
#include <vector>

#include "backends/cpu/adam.h"
#include "backends/cpu/cpu_context.h"
#include "ops/softmax_ce.h"

namespace tb::cpu {

namespace {

using dt = dnnl::memory::data_type;
using dims = dnnl::memory::dims;

constexpr int64_t kRowsPerBlock = 32;  // of W1 per gradient-and-Adam block

// A matmul over memory we point at each call; its own scratchpad, so two threads never share one.
// The argument map is made once: its memory objects are the ones run() re-points.
struct Product {
  dnnl::matmul prim;
  dnnl::memory src, wei, bias, dst;
  std::unordered_map<int, dnnl::memory> args;

  Product() = default;
  Product(const dnnl::engine& e, const dnnl::memory::desc& a, const dnnl::memory::desc& b,
          const dnnl::memory::desc& c, const dnnl::memory::desc* bias_md = nullptr) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const auto pd = bias_md ? dnnl::matmul::primitive_desc({a, b, *bias_md, c}, attr, e)
                            : dnnl::matmul::primitive_desc({a, b, c}, attr, e);
    prim = dnnl::matmul(pd);
    src = dnnl::memory(a, e, DNNL_MEMORY_NONE), wei = dnnl::memory(b, e, DNNL_MEMORY_NONE);
    dst = dnnl::memory(c, e, DNNL_MEMORY_NONE);
    args = {{DNNL_ARG_SRC, src},
            {DNNL_ARG_WEIGHTS, wei},
            {DNNL_ARG_DST, dst},
            {DNNL_ARG_SCRATCHPAD, dnnl::memory(pd.scratchpad_desc(), e)}};
    if (bias_md) bias = dnnl::memory(*bias_md, e, DNNL_MEMORY_NONE), args[DNNL_ARG_BIAS] = bias;
  }
  void run(dnnl::stream& s, const float* a, const float* b, float* c,
           const float* bias_p = nullptr) {
    src.set_data_handle(const_cast<float*>(a));
    wei.set_data_handle(const_cast<float*>(b));
    dst.set_data_handle(c);
    if (bias_p) bias.set_data_handle(const_cast<float*>(bias_p));
    prim.execute(s, args);
  }
};

// A row-major [rows, cols] matrix whose rows lie `ld` floats apart; `transposed` views it as
// [cols, rows].
dnnl::memory::desc view(int64_t rows, int64_t cols, int64_t ld, bool transposed = false) {
  if (transposed) return {dims{cols, rows}, dt::f32, dims{1, ld}};
  return {dims{rows, cols}, dt::f32, dims{ld, 1}};
}

// One thread's products and buffers, for its slice [h0, h1) of the hidden units. The products
// write dense matrices (oneDNN's brgemm matmul takes no others), so the slice's h and dh are
// made in the thread's own buffers and copied into the step's [n, hidden] ones.
struct Worker {
  int64_t h0 = 0, h1 = 0;
  dnnl::stream stream;
  std::vector<float> x;              // the thread's copy of the batch [n, in]
  std::vector<float> h_t, dh_t, w2;  // h[:, slice]^T and dh[:, slice]^T [hs, n]; W2[:, slice]
  Product forward;                   // h^T = W1[slice] x^T (bias and ReLU after)
  Product hidden_grad;               // dh^T = W2[:, slice]^T dlogits^T
  Product w1_grad, w1_grad_tail;     // dW1[block] = dh^T[block] x
  Product logits, w2_grad;           // thread 0: logits = h W2^T + b2, dW2 = dlogits^T h
};

struct MlpPlan {
  int64_t n = 0, in = 0, hidden = 0, classes = 0;
  int threads = 0;
  std::vector<Worker> workers;
};
// By batch size and layer sizes: an epoch's last, partial batch has its own.
using MlpPlans = std::map<std::array<int64_t, 4>, MlpPlan>;

// Makes thread t's products on thread t (inside the parallel region).
void make_worker(const Context& cx, MlpPlan& p, int t, int T) {
  const int64_t n = p.n, in = p.in, hidden = p.hidden, classes = p.classes;
  Worker& w = p.workers[size_t(t)];
  // Slices of whole 16-lane vectors where hidden allows.
  w.h0 = t == 0 ? 0 : hidden * t / T / 16 * 16;
  w.h1 = t + 1 == T ? hidden : hidden * (t + 1) / T / 16 * 16;
  const int64_t hs = w.h1 - w.h0;
  w.h_t.resize(size_t(n * hs)), w.dh_t.resize(size_t(n * hs)), w.w2.resize(size_t(classes * hs));
  w.x.resize(size_t(n * in));
  const int outer = omp_get_max_threads();
  omp_set_num_threads(1);
  w.stream = dnnl::stream(cx.engine);
  if (hs > 0) {
    w.forward = Product(cx.engine, view(hs, in, in), view(n, in, in, true), view(hs, n, n));
    w.hidden_grad = Product(cx.engine, view(classes, hs, hs, true), view(n, classes, classes, true),
                            view(hs, n, n));
    const int64_t block = std::min(kRowsPerBlock, hs), tail = hs % block;
    w.w1_grad = Product(cx.engine, view(block, n, n), view(n, in, in), view(block, in, in));
    if (tail)
      w.w1_grad_tail = Product(cx.engine, view(tail, n, n), view(n, in, in), view(tail, in, in));
  }
  if (t == 0) {
    const auto bias = view(1, classes, classes);
    w.logits = Product(cx.engine, view(n, hidden, hidden), view(classes, hidden, hidden, true),
                       view(n, classes, classes), &bias);
    w.w2_grad = Product(cx.engine, view(n, classes, classes, true), view(n, hidden, hidden),
                        view(classes, hidden, hidden));
  }
  omp_set_num_threads(outer);
}

// dst[j] = sum over rows i of a[i * ld + j], j < cols.
void column_sums(const float* a, int64_t rows, int64_t cols, int64_t ld, float* dst) {
  std::fill(dst, dst + cols, 0.f);
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = a + i * ld;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) dst[j] += row[j];
  }
}

// Thread t's part of the step (of T threads, every one running this between the same barriers).
void step_on_thread(const MlpStep& s, const AdamConstants& k, MlpPlan& p, int t, int T) {
  const int64_t n = p.n, in = p.in, hidden = p.hidden, classes = p.classes;
  float* w1 = s.params;
  float* b1 = w1 + hidden * in;
  float* w2 = b1 + hidden;
  const float* b2 = w2 + classes * hidden;
  float* gw1 = s.grads;
  float* gb1 = gw1 + hidden * in;
  float* gw2 = gb1 + hidden;
  float* gb2 = gw2 + classes * hidden;
  const int64_t head_at = hidden * in + hidden, head = classes * hidden + classes;
  Worker& w = p.workers[size_t(t)];
  float* x = w.x.data();
  const int64_t h0 = w.h0, h1 = w.h1;
  gather_rows(s.batch, s.images, s.labels, s.indices, 0, n, x, t == 0 ? s.y : nullptr);

  const int64_t hs = h1 - h0;
  if (hs > 0) {
    float* h_t = w.h_t.data();
    w.forward.run(w.stream, w1 + h0 * in, x, h_t);
    for (int64_t j = 0; j < hs; ++j) {
      const float b = b1[h0 + j];
      for (int64_t i = 0; i < n; ++i) {
        const float z = std::max(h_t[j * n + i] + b, 0.f);
        h_t[j * n + i] = z;
        s.h[i * hidden + h0 + j] = z;
      }
    }
  }
#pragma omp barrier

  if (t == 0) {
    w.logits.run(w.stream, s.h, w2, s.logits, b2);
    ref::softmax_ce(n, classes, s.logits, s.y, 1.f / float(n), s.dlogits, s.metrics);
    w.w2_grad.run(w.stream, s.dlogits, s.h, gw2);
    column_sums(s.dlogits, n, classes, classes, gb2);
  }
  // Each thread its columns of W2 as the forward read them, before thread 0 updates W2.
  for (int64_t c = 0; c < classes; ++c)
    std::memcpy(w.w2.data() + c * hs, w2 + c * hidden + h0, sizeof(float) * size_t(hs));
#pragma omp barrier
  if (t == 0) adam_span(k, head_at, head_at + head, s.params, s.grads, s.m, s.v, nullptr);

  if (hs > 0) {
    float* dh_t = w.dh_t.data();
    w.hidden_grad.run(w.stream, w.w2.data(), s.dlogits, dh_t);
    for (int64_t j = 0; j < hs; ++j)
      for (int64_t i = 0; i < n; ++i) {
        float& g = dh_t[j * n + i];
        g = w.h_t[size_t(j * n + i)] > 0.f ? g : 0.f;
        s.dh[i * hidden + h0 + j] = g;
      }
    for (int64_t r = 0; r < hs; r += kRowsPerBlock) {
      const int64_t rows = std::min(kRowsPerBlock, hs - r);
      (rows == std::min(kRowsPerBlock, hs) ? w.w1_grad : w.w1_grad_tail)
          .run(w.stream, dh_t + r * n, x, gw1 + (h0 + r) * in);
      adam_span(k, (h0 + r) * in, (h0 + r + rows) * in, s.params, s.grads, s.m, s.v, nullptr);
    }
    for (int64_t j = 0; j < hs; ++j) {
      float sum = 0.f;
      for (int64_t i = 0; i < n; ++i) sum += dh_t[j * n + i];
      gb1[h0 + j] = sum;
    }
    adam_span(k, hidden * in + h0, hidden * in + h1, s.params, s.grads, s.m, s.v, nullptr);
  }
}

bool mlp_step(void* ctx, const MlpStep& s) {
  Context& cx = context(ctx);
  // fp32 only (bf16 runs the layers op by op); a multi-channel NHWC batch would flatten in
  // another order than the reference's.
  if (cx.bf16() || (s.batch.layout == Layout::nhwc && s.batch.channels > 1) || s.batch.augment)
    return false;
  const int64_t n = s.batch.n, in = s.in, hidden = s.hidden, classes = s.classes;
  auto* plans = cx.mlp_plans.get<MlpPlans>();
  if (!plans) plans = cx.mlp_plans.set(new MlpPlans());
  MlpPlan& p = (*plans)[{n, in, hidden, classes}];
  if (p.n == 0) {
    p.n = n, p.in = in, p.hidden = hidden, p.classes = classes;
    p.threads = int(std::min<int64_t>(cx.threads, std::max<int64_t>(1, hidden / 16)));
  }
  if (p.workers.empty()) {
    // Each thread makes its own products; an error (oneDNN refusing a shape) must not leave one
    // thread waiting at a barrier, so they are made in a region of their own.
    p.workers.resize(size_t(p.threads));
    std::vector<std::exception_ptr> failed(size_t(p.threads));
    std::atomic<bool> all_threads{true};
#pragma omp parallel num_threads(p.threads)
    {
      const int t = omp_get_thread_num();
      if (omp_get_num_threads() != p.threads) {
        all_threads = false;
      } else {
        try {
          make_worker(cx, p, t, p.threads);
        } catch (...) {
          failed[size_t(t)] = std::current_exception();
        }
      }
    }
    for (const auto& e : failed)
      if (e) {
        p.workers.clear();
        std::rethrow_exception(e);
      }
    if (!all_threads) {
      p.workers.clear();
      return false;
    }
  }

  const AdamConstants k = adam_constants(s.adam, s.batch.cursor->updates + 1);
  // OpenMP may hand a region fewer threads than asked (OMP_DYNAMIC, a thread limit): then every
  // thread leaves before writing anything and the step is issued op by op.
  std::atomic<bool> ran{true};

#pragma omp parallel num_threads(p.threads)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    if (T != p.threads) {
      ran = false;  // and no thread goes on to a barrier
    } else {
      step_on_thread(s, k, p, t, T);
    }
  }
  return ran;
}

}  // namespace

void register_mlp_step(Backend& b) {
  b.mlp_step = mlp_step;
}

}  // namespace tb::cpu
