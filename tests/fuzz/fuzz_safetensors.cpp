// libFuzzer target: any bytes as a safetensors file. The reader must refuse what is not one with
// tb::Error (never crash, hang or allocate what the bytes merely claim); what it takes is read
// whole and checked against ResNet-50's PyTorch names, shapes and dtypes as `evaluate` and
// `run --init` check a file. Seeds: tests/fuzz/corpus/safetensors/.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "models/model.h"
#include "train/safetensors.h"
#include "train/torch_weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const tb::Model resnet50 = tb::build_resnet50(10);
  try {
    tb::SafeTensorsReader r(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    std::vector<char> bytes;
    for (const tb::SafeTensorInfo& t : r.tensors()) {
      bytes.resize(size_t(t.end - t.begin));  // within the input: the reader has checked
      r.read(t, bytes.data());
    }
    const std::string workload = tb::safetensors_workload(r, "resnet50-cifar10");
    (void)tb::read_torch_weights(r, resnet50, workload);
  } catch (const tb::Error&) {
  }
  return 0;
}
