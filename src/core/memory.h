// Host memory: 64-byte aligned buffers (cache line and AVX-512 friendly) with RAII ownership.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace tb {

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

template <typename T>
using HostBuffer = std::unique_ptr<T[], AlignedFree>;

// Returns zero-initialised storage for n elements, aligned to 64 bytes.
template <typename T>
HostBuffer<T> host_alloc(size_t n) {
  size_t bytes = ((n * sizeof(T) + 63) / 64) * 64;
  if (bytes == 0) bytes = 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  __builtin_memset(p, 0, bytes);
  return HostBuffer<T>(static_cast<T*>(p));
}

// Rounds a byte offset up so the next block starts on a 256-byte boundary (good for both
// AVX-512 loads and GPU coalescing; cuDNN wants at least 16).
inline size_t align_up(size_t bytes, size_t a = 256) {
  return (bytes + a - 1) / a * a;
}

}  // namespace tb
