// Elementwise ops and the data cut: ReLU forward/backward and add (one map shader), softmax
// cross-entropy with its metrics, gather_batch (ref::gather_batch on the device, the cursor read
// there).
#include <cstring>

#include "backends/vulkan/vulkan_context.h"
#include "core/error.h"

namespace tb::vulkan {
namespace {

struct MapPC {
  uint64_t a, b, y;
  uint32_t count, op;
};

void map(void* ctx, const char* op_name, uint32_t op, int64_t n, const float* a, const float* b,
         float* y) {
  if (n <= 0) return;
  const MapPC pc{addr(a), addr(b), addr(y), u32(n, op_name), op};
  dispatch(context(ctx), "map", pc, groups_for(n, 256));
}

struct SoftmaxPC {
  uint64_t z, labels, dz, metrics;
  uint32_t n, k;
  float scale;
};

void softmax_ce(void* ctx, int64_t n, int64_t classes, const float* logits, const int32_t* labels,
                float grad_scale, float* dlogits, float* metrics) {
  if (n <= 0 || classes <= 0) return;
  u32(n * classes, "softmax_ce");
  const SoftmaxPC pc{addr(logits),         addr(labels),      addr(dlogits), addr(metrics),
                     u32(n, "softmax_ce"), uint32_t(classes), grad_scale};
  dispatch(context(ctx), "softmax_ce", pc, 1);  // one workgroup: metrics summed in one order
}

// uint8 data are read as 32-bit words: the word-aligned address, and the byte offset into it.
struct GatherPC {
  uint64_t images, labels, indices, x, y, cursor, seed;
  uint32_t n, channels, height, width, augment;
  int32_t pad;
  uint32_t images_off, labels_off;
  float scale, mean[4], inv_std[4];
};
static_assert(sizeof(GatherPC) == 128);

void gather_batch(void* ctx, const BatchSpec& s, const uint8_t* images, const uint8_t* labels,
                  const int32_t* indices, float* x, int32_t* y) {
  const int64_t total = s.n * s.channels * int64_t(s.height) * s.width;
  if (total <= 0) return;
  if (s.channels > 4) fail("vulkan gather_batch: at most 4 channels are supported");
  GatherPC pc{};
  pc.images = addr(images) & ~uint64_t(3), pc.images_off = uint32_t(addr(images) & 3);
  pc.labels = addr(labels) & ~uint64_t(3), pc.labels_off = uint32_t(addr(labels) & 3);
  pc.indices = addr(indices), pc.x = addr(x), pc.y = addr(y), pc.cursor = addr(s.cursor);
  pc.seed = s.seed;
  u32(total, "gather_batch");
  pc.n = uint32_t(s.n);
  pc.channels = uint32_t(s.channels), pc.height = uint32_t(s.height), pc.width = uint32_t(s.width);
  pc.augment = s.augment ? 1 : 0, pc.pad = s.pad;
  pc.scale = s.scale;
  std::memcpy(pc.mean, s.mean, sizeof(pc.mean));
  std::memcpy(pc.inv_std, s.inv_std, sizeof(pc.inv_std));
  dispatch(context(ctx), "gather_batch", pc, groups_for(total, 256));
}

}  // namespace

void register_elementwise(Backend& b) {
  b.relu_forward = [](void* ctx, int64_t n, const float* x, float* y) {
    map(ctx, "relu_forward", 0, n, x, x, y);
  };
  b.relu_backward = [](void* ctx, int64_t n, const float* y, const float* dy, float* dx) {
    map(ctx, "relu_backward", 1, n, y, dy, dx);
  };
  b.add = [](void* ctx, int64_t n, const float* a, const float* x, float* y) {
    map(ctx, "add", 2, n, a, x, y);
  };
  b.softmax_ce = softmax_ce;
  b.gather_batch = gather_batch;
}

}  // namespace tb::vulkan
