// What the CUDA runtime says about this machine's GPUs. Plain C++ (no CUDA types), so the CLI,
// the benchmark and the report can include it under #ifdef TRAINBENCH_HAVE_CUDA.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tb {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int64_t total_memory_bytes = 0;
  int sm_count = 0;
  int sm_clock_khz = 0;      // peak SM clock
  int memory_clock_khz = 0;  // peak memory clock
  int memory_bus_width_bits = 0;
  int l2_cache_bytes = 0;
  int cc_major = 0, cc_minor = 0;  // compute capability
  int driver_version = 0;          // CUDA driver API version, e.g. 13000
  int runtime_version = 0;         // CUDA runtime this binary uses
  int64_t cudnn_version = 0;       // e.g. 91900 for 9.19.0
  int64_t cublas_version = 0;      // cuBLASLt, e.g. 130000
  int64_t nccl_version = 0;        // e.g. 22809 for 2.28.9; 0 where NCCL is not there
  std::string pci_bus_id;

  std::string compute_capability() const {
    return std::to_string(cc_major) + "." + std::to_string(cc_minor);
  }
};

// One entry per visible GPU; empty when there is no driver or no GPU (never throws for that).
std::vector<CudaDeviceInfo> cuda_devices();

// Why the CUDA backend cannot run here ("" when at least one GPU is usable), e.g.
// "cudaGetDeviceCount: CUDA driver version is insufficient for CUDA runtime version".
std::string cuda_unavailable_reason();

// Version strings for records: "13.0" style for CUDA versions, "9.19.0" for cuDNN, "2.28.9" for
// NCCL ("none" for 0: built without it).
std::string cuda_version_str(int v);
std::string cudnn_version_str(int64_t v);
std::string nccl_version_str(int64_t v);

}  // namespace tb
