// Which backends this binary has, whether each can run on this machine, and making one.
#include "backends/backend.h"
#include "core/error.h"
#ifdef TRAINBENCH_HAVE_VULKAN
#include "backends/vulkan/vulkan_info.h"
#endif

namespace tb {

std::vector<BackendInfo> list_backends() {
  std::vector<BackendInfo> out;
  out.push_back({"reference", DeviceKind::cpu, true, true, ""});
  out.push_back({"cpu-onednn", DeviceKind::cpu, true, true, ""});
#ifdef TRAINBENCH_HAVE_CUDA
  int gpus = cuda_device_count();
  out.push_back({"cuda", DeviceKind::cuda, true, gpus > 0,
                 gpus > 0 ? "" : "no CUDA GPU found (cudaGetDeviceCount returned 0 or failed)"});
#else
  out.push_back({"cuda", DeviceKind::cuda, false, false,
                 "not built in (configure with nvcc available, -DTRAINBENCH_CUDA=ON)"});
#endif
#ifdef TRAINBENCH_HAVE_VULKAN
  const std::string vk_why = vulkan_unavailable_reason();
  out.push_back({"vulkan", DeviceKind::vulkan, true, vk_why.empty(), vk_why});
#else
  out.push_back(
      {"vulkan", DeviceKind::vulkan, false, false,
       "not built in (configure with the Vulkan headers and glslc, -DTRAINBENCH_VULKAN=ON)"});
#endif
  return out;
}

std::unique_ptr<Backend> make_backend(const BackendConfig& cfg) {
  if (cfg.device == DeviceKind::cpu) {
    if (cfg.reference) return make_reference_backend(cfg);
    return make_cpu_backend(cfg);
  }
  if (cfg.device == DeviceKind::vulkan) {
#ifdef TRAINBENCH_HAVE_VULKAN
    return make_vulkan_backend(cfg);
#else
    fail(
        "--device vulkan: this trainbench was built without the Vulkan backend (no Vulkan "
        "headers or glslc at build time)");
#endif
  }
#ifdef TRAINBENCH_HAVE_CUDA
  int gpus = cuda_device_count();
  TB_CHECK(gpus > 0, "--device cuda: no CUDA GPU found on this machine");
  TB_CHECK(cfg.device_index >= 0 && cfg.device_index < gpus,
           "--device cuda:{}: this machine has {} CUDA GPU(s)", cfg.device_index, gpus);
  return make_cuda_backend(cfg);
#else
  fail("--device cuda: this trainbench was built without the CUDA backend (no nvcc at build time)");
#endif
}

}  // namespace tb
