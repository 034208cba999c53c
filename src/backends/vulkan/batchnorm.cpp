// Batch normalisation (ops/batchnorm.h): the statistics a workgroup per channel in a fixed-order
// tree (bn_stats), the normalisation elementwise (bn_apply, with the ReLU and the residual add
// fused where the executor asks), the backward's channel sums (bn_bwd_reduce) then the input
// gradient (bn_bwd_apply).
#include "backends/vulkan/vulkan_context.h"

namespace tb::vulkan {
namespace {

constexpr uint32_t kEval = 1, kRelu = 2, kSkip = 4;

struct StatsPC {
  uint64_t x, mean, invstd, rmean, rvar;
  uint32_t n, c, hw;
  float eps, momentum;
};
struct ApplyPC {
  uint64_t x, skip, gamma, beta, mean, stat, y;
  uint32_t count, c, hw, flags;
  float eps;
};
struct BwdReducePC {
  uint64_t x, dy, z, mean, invstd, dgamma, dbeta;
  uint32_t n, c, hw, relu;
};
struct BwdApplyPC {
  uint64_t x, dy, z, gamma, mean, invstd, dgamma, dbeta, dx;
  uint32_t count, c, hw, relu;
  float inv_m;
};

uint32_t count_of(const BnDims& d, const char* op) {
  return u32(d.n * d.c * d.hw, op);
}

void forward_train(void* ctx, const BnDims& d, const BnParams& p, const float* x, const float* skip,
                   const float* gamma, const float* beta, float* y, float* save_mean,
                   float* save_invstd, float* running_mean, float* running_var, uint32_t flags) {
  Context& cx = context(ctx);
  const uint32_t count = count_of(d, "batchnorm_forward_train");
  if (!count) return;
  dispatch(
      cx, "bn_stats",
      StatsPC{addr(x), addr(save_mean), addr(save_invstd), addr(running_mean), addr(running_var),
              uint32_t(d.n), uint32_t(d.c), uint32_t(d.hw), p.eps, p.momentum},
      groups_for(d.c, 1));
  dispatch(cx, "bn_apply",
           ApplyPC{addr(x), addr(skip), addr(gamma), addr(beta), addr(save_mean), addr(save_invstd),
                   addr(y), count, uint32_t(d.c), uint32_t(d.hw), flags, p.eps},
           groups_for(count, 256));
}

void forward_eval(void* ctx, const BnDims& d, const BnParams& p, const float* x, const float* skip,
                  const float* gamma, const float* beta, const float* running_mean,
                  const float* running_var, float* y, uint32_t flags) {
  const uint32_t count = count_of(d, "batchnorm_forward_eval");
  if (!count) return;
  dispatch(
      context(ctx), "bn_apply",
      ApplyPC{addr(x), addr(skip), addr(gamma), addr(beta), addr(running_mean), addr(running_var),
              addr(y), count, uint32_t(d.c), uint32_t(d.hw), flags | kEval, p.eps},
      groups_for(count, 256));
}

void backward(void* ctx, const BnDims& d, const float* x, const float* z, const float* dy,
              const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
              float* dgamma, float* dbeta, uint32_t relu) {
  Context& cx = context(ctx);
  const uint32_t count = count_of(d, "batchnorm_backward");
  if (!count) return;
  dispatch(cx, "bn_bwd_reduce",
           BwdReducePC{addr(x), addr(dy), addr(z), addr(save_mean), addr(save_invstd), addr(dgamma),
                       addr(dbeta), uint32_t(d.n), uint32_t(d.c), uint32_t(d.hw), relu},
           groups_for(d.c, 1));
  dispatch(cx, "bn_bwd_apply",
           BwdApplyPC{addr(x), addr(dy), addr(z), addr(gamma), addr(save_mean), addr(save_invstd),
                      addr(dgamma), addr(dbeta), addr(dx), count, uint32_t(d.c), uint32_t(d.hw),
                      relu, float(1.0 / (double(d.n) * double(d.hw)))},
           groups_for(count, 256));
}

}  // namespace

void register_batchnorm(Backend& b) {
  b.batchnorm_forward_train = [](void* ctx, OpCache&, const BnDims& d, const BnParams& p,
                                 const float* x, const float* g, const float* be, float* y,
                                 float* sm, float* si, float* rm, float* rv) {
    forward_train(ctx, d, p, x, nullptr, g, be, y, sm, si, rm, rv, 0);
  };
  b.batchnorm_forward_eval = [](void* ctx, OpCache&, const BnDims& d, const BnParams& p,
                                const float* x, const float* g, const float* be, const float* rm,
                                const float* rv, float* y) {
    forward_eval(ctx, d, p, x, nullptr, g, be, rm, rv, y, 0);
  };
  b.batchnorm_backward = [](void* ctx, OpCache&, const BnDims& d, const float* x, const float* dy,
                            const float* g, const float* sm, const float* si, float* dx, float* dg,
                            float* db) {
    backward(ctx, d, x, nullptr, dy, g, sm, si, dx, dg, db, 0);
  };
  b.batchnorm_relu_forward_train = [](void* ctx, OpCache&, const BnDims& d, const BnParams& p,
                                      const float* x, const float* g, const float* be, float* z,
                                      float* sm, float* si, float* rm, float* rv) {
    forward_train(ctx, d, p, x, nullptr, g, be, z, sm, si, rm, rv, kRelu);
  };
  b.batchnorm_relu_forward_eval = [](void* ctx, OpCache&, const BnDims& d, const BnParams& p,
                                     const float* x, const float* g, const float* be,
                                     const float* rm, const float* rv, float* z) {
    forward_eval(ctx, d, p, x, nullptr, g, be, rm, rv, z, kRelu);
  };
  b.batchnorm_relu_backward = [](void* ctx, OpCache&, const BnDims& d, const float* x,
                                 const float* z, const float* dz, const float* g, const float* sm,
                                 const float* si, float* dx, float* dg, float* db) {
    backward(ctx, d, x, z, dz, g, sm, si, dx, dg, db, 1);
  };
  b.batchnorm_add_relu_forward_train =
      [](void* ctx, OpCache&, const BnDims& d, const BnParams& p, const float* x, const float* skip,
         const float* g, const float* be, float* z, float* sm, float* si, float* rm,
         float* rv) { forward_train(ctx, d, p, x, skip, g, be, z, sm, si, rm, rv, kRelu | kSkip); };
  b.batchnorm_add_relu_forward_eval =
      [](void* ctx, OpCache&, const BnDims& d, const BnParams& p, const float* x, const float* skip,
         const float* g, const float* be, const float* rm, const float* rv,
         float* z) { forward_eval(ctx, d, p, x, skip, g, be, rm, rv, z, kRelu | kSkip); };
}

}  // namespace tb::vulkan
