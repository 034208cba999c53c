// Which backends this binary has, whether each can run here, parsing `--device`, and making one.
#include <fmt/format.h>

#include <algorithm>
#include <iterator>

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

void parse_device(const std::string& s, DeviceKind* kind, int* index) {
  std::string names;
  for (DeviceKind k : kDeviceKinds) {
    const std::string name = device_kind_name(k);
    const bool indexed = k != DeviceKind::cpu;  // the CPU is one device of many cores
    names += (names.empty() ? "" : ", ") + name + (indexed ? ", " + name + ":N" : "");
    if (s == name) {
      *kind = k, *index = 0;
      return;
    }
    const std::string digits = s.substr(std::min(s.size(), name.size() + 1));
    if (indexed && s.rfind(name + ":", 0) == 0 && !digits.empty() && digits.size() < 5 &&
        digits.find_first_not_of("0123456789") == std::string::npos) {
      *kind = k, *index = std::stoi(digits);
      return;
    }
  }
  fail("--device: '{}' is not one of {}", s, names);
}

void check_backend_table(const Backend& b) {
  const std::pair<const char*, bool> entries[] = {
      {"alloc", b.alloc != nullptr},
      {"free", b.free != nullptr},
      {"upload", b.upload != nullptr},
      {"download", b.download != nullptr},
      {"copy", b.copy != nullptr},
      {"fill", b.fill != nullptr},
      {"synchronize", b.synchronize != nullptr},
      {"gather_batch", b.gather_batch != nullptr},
      {"dense_forward", b.dense_forward != nullptr},
      {"dense_backward", b.dense_backward != nullptr},
      {"relu_forward", b.relu_forward != nullptr},
      {"relu_backward", b.relu_backward != nullptr},
      {"add", b.add != nullptr},
      {"softmax_ce", b.softmax_ce != nullptr},
      {"conv2d_forward", b.conv2d_forward != nullptr},
      {"conv2d_backward_data", b.conv2d_backward_data != nullptr},
      {"conv2d_backward_weights", b.conv2d_backward_weights != nullptr},
      {"batchnorm_forward_train", b.batchnorm_forward_train != nullptr},
      {"batchnorm_forward_eval", b.batchnorm_forward_eval != nullptr},
      {"batchnorm_backward", b.batchnorm_backward != nullptr},
      {"maxpool_forward", b.maxpool_forward != nullptr},
      {"maxpool_backward", b.maxpool_backward != nullptr},
      {"global_avgpool_forward", b.global_avgpool_forward != nullptr},
      {"global_avgpool_backward", b.global_avgpool_backward != nullptr},
      {"adam_update", b.adam_update != nullptr},
      {"sgd_update", b.sgd_update != nullptr},
      {"advance_cursor", b.advance_cursor != nullptr},
  };
  for (const auto& [name, set] : entries)
    TB_CHECK(set, "backend {}: its table leaves the required entry {} unset", b.name, name);
  const bool graphs[] = {b.graph_begin != nullptr, b.graph_end != nullptr,
                         b.graph_launch != nullptr, b.graph_destroy != nullptr};
  const bool timers[] = {b.timers_create != nullptr, b.timers_start != nullptr,
                         b.timer_mark != nullptr, b.timers_read != nullptr,
                         b.timers_destroy != nullptr};
  TB_CHECK(
      std::all_of(std::begin(graphs), std::end(graphs), [&](bool v) { return v == graphs[0]; }),
      "backend {}: the graph entries are set in part", b.name);
  TB_CHECK(
      std::all_of(std::begin(timers), std::end(timers), [&](bool v) { return v == timers[0]; }),
      "backend {}: the timer entries are set in part", b.name);
}

namespace {

std::unique_ptr<Backend> make_unchecked(const BackendConfig& cfg) {
  switch (cfg.device) {
    case DeviceKind::cpu:
      return cfg.reference ? make_reference_backend(cfg) : make_cpu_backend(cfg);
    case DeviceKind::cuda: {
#ifdef TRAINBENCH_HAVE_CUDA
      const int gpus = cuda_device_count();
      TB_CHECK(gpus > 0, "--device cuda: no CUDA GPU found on this machine");
      TB_CHECK(cfg.device_index >= 0 && cfg.device_index < gpus,
               "--device cuda:{}: this machine has {} CUDA GPU(s)", cfg.device_index, gpus);
      return make_cuda_backend(cfg);
#else
      fail(
          "--device cuda: this trainbench was built without the CUDA backend (no nvcc at build "
          "time)");
#endif
    }
    case DeviceKind::vulkan:
#ifdef TRAINBENCH_HAVE_VULKAN
      return make_vulkan_backend(cfg);
#else
      fail(
          "--device vulkan: this trainbench was built without the Vulkan backend (no Vulkan "
          "headers or glslc at build time)");
#endif
  }
  fail("--device {}: no backend for this kind of device", device_kind_name(cfg.device));
}

}  // namespace

std::unique_ptr<Backend> make_backend(const BackendConfig& cfg) {
  std::unique_ptr<Backend> b = make_unchecked(cfg);
  check_backend_table(*b);
  return b;
}

}  // namespace tb
