#include "bench/machine.h"

#include <gtest/gtest.h>

namespace tb {
namespace {

TEST(Machine, CpuInfo) {
  const CpuInfo c = cpu_info();
  EXPECT_FALSE(c.model.empty());
  EXPECT_GE(c.usable_cpus, 1);
  EXPECT_GE(c.logical_cpus, 1);
  EXPECT_GE(c.physical_cores, 1);
  EXPECT_LE(c.physical_cores, c.usable_cpus);
  EXPECT_FALSE(c.isa.empty());
  EXPECT_GE(c.max_mhz, 0);
  if (c.max_mhz > 0) {
    EXPECT_FALSE(c.mhz_source.empty());
  }
  // Feature implications that hold on every x86 part.
  if (c.avx512_bf16) {
    EXPECT_TRUE(c.avx512f);
  }
  if (c.avx512f) {
    EXPECT_TRUE(c.avx2);
  }
}

TEST(Machine, JsonHasTheRecordKeys) {
  const nlohmann::json j = machine_json();
  for (const char* key :
       {"hostname", "os", "kernel", "arch", "cpu", "memory_bytes", "gpus", "versions"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_GT(j["memory_bytes"].get<uint64_t>(), 0u);
  EXPECT_FALSE(j["cpu"]["model"].get<std::string>().empty());
  EXPECT_FALSE(j["versions"]["onednn"].get<std::string>().empty());
  EXPECT_TRUE(j["versions"].contains("compiler"));
  EXPECT_TRUE(j["gpus"].is_array());
}

}  // namespace
}  // namespace tb
