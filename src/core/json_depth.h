// JSON read from files is checked for depth before use: nlohmann::json parses and frees any
// depth without recursing, but copies, compares and prints recursively, so a file nested a
// hundred thousand levels deep would overflow the stack there. trainbench's files nest 5 deep.
#pragma once
#include <nlohmann/json.hpp>

namespace tb {

inline constexpr int kMaxJsonDepth = 64;

// Whether j holds arrays or objects nested more than `levels` deep; recurses at most that far.
inline bool json_nests_deeper(const nlohmann::json& j, int levels = kMaxJsonDepth) {
  if (!j.is_structured()) return false;
  if (levels == 0) return true;
  for (const nlohmann::json& v : j)
    if (json_nests_deeper(v, levels - 1)) return true;
  return false;
}

}  // namespace tb
