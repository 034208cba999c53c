// The SPIR-V of src/backends/vulkan/shaders/*.comp, compiled by glslc at build time and embedded
// (cmake/vulkan_shaders.cmake generates the definitions).
#pragma once
#include <cstddef>
#include <cstdint>

namespace tb::vulkan {

struct Spirv {
  const char* name;  // the .comp file's name without the extension
  const uint32_t* words;
  size_t bytes;
};
// nullptr for a name that is not there.
const Spirv* find_shader(const char* name);

}  // namespace tb::vulkan
