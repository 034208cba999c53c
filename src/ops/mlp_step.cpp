#include "ops/mlp_step.h"

#include <cstddef>
#include <vector>

#include "ops/dense.h"
#include "ops/relu.h"
#include "ops/softmax_ce.h"

namespace tb::ref {

void mlp_step(const MlpStep& s) {
  const int64_t n = s.batch.n, in = s.in, hidden = s.hidden, classes = s.classes;
  const DenseDims d1{n, in, hidden}, d2{n, hidden, classes};
  float* w1 = s.params;
  float* b1 = w1 + hidden * in;
  float* w2 = b1 + hidden;
  float* b2 = w2 + classes * hidden;
  float* gw1 = s.grads;
  float* gb1 = gw1 + hidden * in;
  float* gw2 = gb1 + hidden;
  float* gb2 = gw2 + classes * hidden;
  std::vector<float> x(size_t(n * in)), dh_relu_out(size_t(n * hidden));
  gather_batch(s.batch, s.images, s.labels, s.indices, x.data(), s.y);
  dense_forward(d1, x.data(), w1, b1, s.h);
  relu_forward(n * hidden, s.h, s.h);
  dense_forward(d2, s.h, w2, b2, s.logits);
  softmax_ce(n, classes, s.logits, s.y, 1.f / float(n), s.dlogits, s.metrics);
  dense_backward(d2, s.h, w2, s.dlogits, dh_relu_out.data(), gw2, gb2);
  relu_backward(n * hidden, s.h, dh_relu_out.data(), s.dh);
  dense_backward(d1, x.data(), w1, s.dh, nullptr, gw1, gb1);
  adam_update(hidden * in + hidden + classes * hidden + classes, s.params, s.grads, s.m, s.v,
              s.adam, s.batch.cursor->updates + 1);
}

}  // namespace tb::ref
