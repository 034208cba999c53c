// The oneDNN CPU backend's context: one engine and stream for the run, the thread count, the
// precision. Each op file (dense.cpp, conv2d.cpp, ...) keeps its primitives in the node's OpCache.
//
// --precision bf16 (where oneDNN has bf16 kernels: AVX512-BF16 or AMX): convolutions and dense
// layers read bf16 copies of their operands and accumulate and write fp32, as PyTorch's CPU
// autocast runs them; activations, batch norm, pools, the loss and the optimizer (fp32 master
// weights) stay fp32. A copy is made per call (a reorder that converts, or to_bf16 below), except
// for the weights where the matmuls read them: those come from a bf16 mirror of the parameter
// array that the optimizer keeps current as it updates the fp32 values (set_param_array).
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace tb::cpu {

// How a convolution direction runs on the CPU (conv2d.cpp says what each is and when it applies).
enum class ConvMode : uint8_t { plain, blocked, unfold, im2col, channels };

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  int threads = 1;
  Precision precision = Precision::fp32;
  // Scratch for one op call at a time (ops run one after another): it grows to the largest
  // request during the first step and is not reallocated after that.
  std::vector<float> scratch_buf;
  // Tests set this to run every convolution that can in one mode instead of the timed choice.
  std::optional<ConvMode> conv_mode;
  bool deterministic = false;  // --deterministic: no timed choice, the first candidate always
  // The timed choices, by shape and direction: ResNet-50's 53 convolutions have 23 shapes, so
  // most nodes reuse a choice (and nodes of one shape run alike).
  std::map<std::array<int64_t, 11>, ConvMode> conv_chosen;
  // What a buffer still holds for the next call, if anything: the op state that left it there
  // and the input it was made from (a convolution's weight gradient leaves dy, rearranged or
  // converted, for its data gradient: the call right after it).
  struct Left {
    const void* key = nullptr;
    const float* source = nullptr;
    bool is(const void* k, const float* s) const { return key && key == k && source == s; }
  };
  // The scratch's; every scratch() call clears it.
  Left scratch_left;
  float* scratch(size_t floats) {
    scratch_left = {};
    if (scratch_buf.size() < floats) scratch_buf.resize(floats);
    return scratch_buf.data();
  }
  // The fused MLP step's per-thread products and buffers (mlp_step.cpp), for the shapes last run.
  OpCache mlp_plans;
  // Batch norm's per-thread channel sums under NHWC (batchnorm.cpp), grown like the scratch.
  std::vector<double> sums;
  // bf16 copies of an op call's operands, one buffer per operand slot (0, 1), grown like the
  // scratch. Never touches the float scratch, so what that holds for reuse stays.
  std::vector<uint16_t> bf16_buf[2];
  bool bf16() const { return precision == Precision::bf16; }
  // BackendConfig::reuse_bf16: besides the weights' mirror below, a convolution keeps its
  // forward's copy of x for its weight gradient, and the weight gradient's copy of dy for the
  // data gradient (conv2d_forms.cpp); off, every call converts its own operands.
  bool reuse_bf16 = false;
  bool keeps_bf16() const { return bf16() && reuse_bf16; }
  // bf16_buf[slot]'s (set only under keeps_bf16); every to_bf16() into the slot clears it, as
  // does the next convolution direction other than a data gradient (conv2d.cpp).
  Left bf16_left[2];
  void leave_bf16(int slot, const void* key, const float* source) {
    if (keeps_bf16()) bf16_left[slot] = {key, source};
  }
  const uint16_t* left_bf16(int slot, const void* key, const float* source) const {
    return bf16_left[slot].is(key, source) ? bf16_buf[slot].data() : nullptr;
  }
  const uint16_t* to_bf16(int slot, const float* src, size_t count);
  // What a primitive reads for an fp32 operand: the operand itself, or under bf16 its bf16 copy:
  // the mirror's for weights, else one made now.
  const void* operand(int slot, const float* src, size_t count) {
    if (!bf16()) return src;
    if (const uint16_t* m = mirrored(src, count)) return m;
    return to_bf16(slot, src, count);
  }

  // bf16 with BackendConfig::reuse_bf16: the run's parameter array and its bf16 mirror, kept
  // current by the optimizers (which write both) and by upload, copy and fill into the array.
  const float* params = nullptr;
  size_t param_count = 0;
  std::vector<uint16_t> params16;
  // The mirror's copy of src[0 .. count), or nullptr where that is not inside the array.
  const uint16_t* mirrored(const float* src, size_t count) const {
    const auto at = uintptr_t(src), lo = uintptr_t(params);
    if (params16.empty() || at < lo ||
        at + count * sizeof(float) > lo + param_count * sizeof(float))
      return nullptr;
    return params16.data() + (src - params);
  }
  uint16_t* mirror_of(float* p, size_t count) { return const_cast<uint16_t*>(mirrored(p, count)); }
  // After bytes were written at dst: converts what of them lies inside the array again.
  void refresh_mirror(const void* dst, size_t bytes);
  dnnl::memory::data_type operand_type() const {
    return bf16() ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  }
};

// True where oneDNN's effective ISA has bf16 arithmetic (AVX512-BF16 or AMX-BF16).
bool cpu_has_bf16_kernels();
// The ISA oneDNN's JIT dispatches here ("cpu_isa_avx2" -> "avx2").
std::string onednn_isa();
// dst[i] = f32_to_bf16(src[i]) for n values, split over the threads where n is large.
void convert_to_bf16(const float* src, uint16_t* dst, int64_t n);

// Rows [begin, end) of an unaugmented batch's x and y (y null: x only; as gather_batch cuts them),
// on the calling thread; it also asks for the cache lines of its share of the next batch's images.
void gather_rows(const BatchSpec& s, const uint8_t* images, const uint8_t* labels,
                 const int32_t* indices, int64_t begin, int64_t end, float* x, int32_t* y);

inline Context& context(void* ctx) {
  return *static_cast<Context*>(ctx);
}

// oneDNN memory over a pointer we own, in plain (row-major / NCHW) layout.
inline dnnl::memory plain_memory(const Context& cx, const dnnl::memory::dims& dims, const void* p,
                                 dnnl::memory::data_type dt = dnnl::memory::data_type::f32) {
  using tag = dnnl::memory::format_tag;
  static const tag plain[] = {tag::a, tag::a, tag::ab, tag::abc, tag::abcd, tag::abcde};
  dnnl::memory::desc md(dims, dt, plain[dims.size()]);
  return dnnl::memory(md, cx.engine, const_cast<void*>(p));
}

// conv2d.cpp: the modes that may run a convolution of this shape in fp32 or bf16 (more than one:
// timed on first use), and a mode's name.
std::vector<ConvMode> conv2d_candidates(const ConvDims& d, bool bf16);
const char* conv_mode_name(ConvMode m);

// Fills the table entries this backend implements; each op file adds its own.
void register_dense(Backend& b);
void register_elementwise(Backend& b);  // relu, add, softmax_ce, gather_batch
void register_optimizers(Backend& b);   // adam, sgd
void register_conv2d(Backend& b);
void register_batchnorm(Backend& b);
void register_pool(Backend& b);
void register_mlp_step(Backend& b);  // fp32

}  // namespace tb::cpu
