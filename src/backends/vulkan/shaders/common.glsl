// What every shader includes: device pointers as buffer references (push constants hold them,
// vulkan_context.h says why), 64-bit integers for the step cursor and the augmentation hash.
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require

layout(buffer_reference, std430, buffer_reference_align = 4) buffer Floats {
  float v[];
};
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Ints {
  int v[];
};
// uint8 data read a 32-bit word at a time (no 8-bit storage needed): see byte_at.
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Words {
  uint v[];
};
// ops/batch.h's StepCursor, field for field.
layout(buffer_reference, std430, buffer_reference_align = 8) buffer Cursor {
  int64_t step;
  int64_t stride;
  int64_t count;
  int64_t updates;
  int64_t epoch;
  uint64_t seed;
};

// Byte i of uint8 data that starts `offset` bytes into the word-aligned buffer `w`.
uint byte_at(Words w, uint offset, uint i) {
  const uint at = offset + i;
  return (w.v[at >> 2] >> (8u * (at & 3u))) & 0xffu;
}

// A fixed-order sum over a workgroup of 256 through shared memory `red` (declared by the
// includer): the same tree every run, so --deterministic repeats to the bit.
#define TB_REDUCE_256(red, t, value, result) \
  red[t] = (value);                          \
  barrier();                                 \
  for (uint s_ = 128u; s_ > 0u; s_ >>= 1) {  \
    if (t < s_) red[t] += red[t + s_];       \
    barrier();                               \
  }                                          \
  result = red[0];                           \
  barrier();
