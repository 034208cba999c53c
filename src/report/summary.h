// The lines `trainbench run` prints when a run ends: times, throughput, accuracy, MFU, use, the
// step split; read from the record the run wrote (so the screen says what the file says).
#pragma once
#include <nlohmann/json.hpp>

#include "report/record.h"

namespace tb {

void print_run_summary(const nlohmann::json& record, const RunFacts& f);

}  // namespace tb
