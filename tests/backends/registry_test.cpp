// Making a backend: --device parsing by the kinds' names, and the table check that turns a
// missing entry into a one-line error at start instead of a crash mid-step.
#include <gtest/gtest.h>

#include "backends/backend.h"
#include "core/error.h"

namespace tb {
namespace {

TEST(Registry, ParsesDevicesByKindName) {
  DeviceKind k = DeviceKind::cuda;
  int i = -1;
  parse_device("cpu", &k, &i);
  EXPECT_EQ(k, DeviceKind::cpu);
  EXPECT_EQ(i, 0);
  parse_device("cuda:3", &k, &i);
  EXPECT_EQ(k, DeviceKind::cuda);
  EXPECT_EQ(i, 3);
  parse_device("vulkan:1", &k, &i);
  EXPECT_EQ(k, DeviceKind::vulkan);
  EXPECT_EQ(i, 1);
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cpu:1", "cuda:-1", "cuda:123456", ""}) {
    try {
      parse_device(bad, &k, &i);
      ADD_FAILURE() << bad << " was taken";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("is not one of cpu, cuda, cuda:N, vulkan, vulkan:N"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(Registry, MissingRequiredEntryIsNamed) {
  auto be = make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, true});
  EXPECT_NO_THROW(check_backend_table(*be));
  be->conv2d_backward_data = nullptr;
  try {
    check_backend_table(*be);
    ADD_FAILURE() << "a table without conv2d_backward_data passed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv2d_backward_data"), std::string::npos) << e.what();
  }
  auto cpu = make_backend({DeviceKind::cpu, 0, Precision::fp32, 1, false});
  cpu->timers_create = [](void*, int) -> void* { return nullptr; };  // one timer entry of five
  EXPECT_THROW(check_backend_table(*cpu), Error);
}

}  // namespace
}  // namespace tb
