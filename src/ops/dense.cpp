// Plain-loop reference of the dense layer: the oracle for every backend. Double accumulators so
// the reference is more exact than anything it judges.
#include "ops/dense.h"

namespace tb::ref {

void dense_forward(const DenseDims& d, const float* x, const float* w, const float* b, float* y) {
  for (int64_t i = 0; i < d.n; ++i)
    for (int64_t o = 0; o < d.out; ++o) {
      double acc = b ? b[o] : 0.0;
      for (int64_t k = 0; k < d.in; ++k) acc += double(x[i * d.in + k]) * w[o * d.in + k];
      y[i * d.out + o] = float(acc);
    }
}

void dense_backward(const DenseDims& d, const float* x, const float* w, const float* dy, float* dx,
                    float* dw, float* db) {
  if (dx)
    for (int64_t i = 0; i < d.n; ++i)
      for (int64_t k = 0; k < d.in; ++k) {
        double acc = 0;
        for (int64_t o = 0; o < d.out; ++o) acc += double(dy[i * d.out + o]) * w[o * d.in + k];
        dx[i * d.in + k] = float(acc);
      }
  for (int64_t o = 0; o < d.out; ++o)
    for (int64_t k = 0; k < d.in; ++k) {
      double acc = 0;
      for (int64_t i = 0; i < d.n; ++i) acc += double(dy[i * d.out + o]) * x[i * d.in + k];
      dw[o * d.in + k] = float(acc);
    }
  if (db)
    for (int64_t o = 0; o < d.out; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < d.n; ++i) acc += dy[i * d.out + o];
      db[o] = float(acc);
    }
}

}  // namespace tb::ref
