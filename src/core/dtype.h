// Element types and devices. Plain enums with names for printing and records.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace tb {

enum class DType : uint8_t { f32, bf16, u8, i32 };
// A new kind of device: one entry here and in device_kind_name; `--device` parsing, records and
// `devices` take it from these two.
enum class DeviceKind : uint8_t { cpu, cuda, vulkan };
inline constexpr DeviceKind kDeviceKinds[] = {DeviceKind::cpu, DeviceKind::cuda,
                                              DeviceKind::vulkan};
// What the math runs in. fp32: plain fp32. tf32: fp32 storage, tensor-core tf32 products.
// bf16: bf16 products with fp32 accumulation, fp32 master weights and optimizer state.
enum class Precision : uint8_t { fp32, tf32, bf16 };
// How a 4-D activation [n, c, h, w] lies in memory: NCHW (every backend), or NHWC, channels
// innermost (the CPU backend, where 1x1 convolutions are then plain matrix products). The plan
// picks one for the whole run (plan.h); ops carry it in their dims.
enum class Layout : uint8_t { nchw, nhwc };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::bf16:
      return 2;
    case DType::u8:
      return 1;
    case DType::i32:
      return 4;
  }
  return 0;
}
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::bf16:
      return "bf16";
    case DType::u8:
      return "u8";
    case DType::i32:
      return "i32";
  }
  return "?";
}
inline const char* device_kind_name(DeviceKind d) {
  switch (d) {
    case DeviceKind::cpu:
      return "cpu";
    case DeviceKind::cuda:
      return "cuda";
    case DeviceKind::vulkan:
      return "vulkan";
  }
  return "?";
}
inline const char* layout_name(Layout l) {
  return l == Layout::nhwc ? "nhwc" : "nchw";
}
inline const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32:
      return "fp32";
    case Precision::tf32:
      return "tf32";
    case Precision::bf16:
      return "bf16";
  }
  return "?";
}

// bf16 <-> f32 on the host: round to nearest even, NaN kept quiet.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

}  // namespace tb
