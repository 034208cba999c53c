// What a command needs to know about the device it runs on: its name and details for the record,
// the datasheet (or estimated) peak and the measured one for MFU, and for `profile` the memory
// bandwidth of the roofline. Gathered here once for run, profile and evaluate, whatever the kind.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "backends/backend.h"

namespace tb {

struct DeviceFacts {
  std::string kind, name;                               // "cpu", "AMD EPYC 9R14"
  nlohmann::json extra = nlohmann::json::object();      // the device's details for the record
  std::optional<double> peak_datasheet, peak_measured;  // FLOP/s for the run's precision
  std::string peak_datasheet_source, peak_measured_source;
  // FLOP/s of precisions some nodes may run in instead (a bf16 GPU run's tf32 layers).
  std::map<Precision, double> other_peaks;
  std::optional<double> bandwidth;  // bytes/s of device memory
  std::string bandwidth_source;
};

struct FactsWanted {
  bool measured_peak = false;  // a GEMM on the device (about a second)
  bool bandwidth = false;      // the roofline's memory bandwidth (CPU: a measured memcpy)
};

// be: the run's backend (the measured peak runs through it off the CPU); threads: the CPU's.
DeviceFacts device_facts(const BackendConfig& cfg, Backend& be, int threads,
                         const FactsWanted& wanted);

// `trainbench devices`: every device this binary can run on, with its peaks (measured too where
// `measure`), and the backends built in.
std::string devices_text(bool measure);

}  // namespace tb
