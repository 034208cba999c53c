// Host-memory entries of the backend table, shared by the reference and oneDNN backends.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tb::host_memory {
void* alloc(void* ctx, size_t bytes);
void free(void* ctx, void* p);
void copy(void* ctx, void* dst, const void* src, size_t bytes);
void fill(void* ctx, float* dst, float value, int64_t count);
void synchronize(void* ctx);
}  // namespace tb::host_memory
