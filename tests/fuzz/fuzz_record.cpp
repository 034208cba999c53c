// Result records and profiles as `trainbench compare` reads them, run through its table
// building, text, CSV and HTML. The input holds up to 4 files separated by \0 bytes (which JSON
// text cannot hold), so rows are compared with each other.
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "report/compare.h"
#include "report/html.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string all(reinterpret_cast<const char*>(data), size);
  std::vector<nlohmann::json> inputs;
  std::vector<std::string> files;
  for (size_t at = 0, i = 0; at <= all.size() && i < 4; i++) {
    size_t end = all.find('\0', at);
    if (end == std::string::npos) end = all.size();
    const std::string file = "record" + std::to_string(i) + ".json";
    tb::fuzz::expect_ok_or_error([&] {
      inputs.push_back(tb::parse_compare_input(all.substr(at, end - at), file));
      files.push_back(file);
    });
    at = end + 1;
  }
  if (inputs.empty()) return 0;
  for (const bool loose : {false, true}) {
    tb::fuzz::expect_ok_or_error([&] {
      tb::CompareSettings s;
      s.with_seed = s.force = loose;
      const tb::Comparison c = tb::compare_inputs(inputs, files, s);
      tb::fuzz::check(!tb::format_compare_text(c).empty() && !tb::format_compare_csv(c).empty() &&
                          !tb::render_compare_html(c).empty(),
                      "a table in every format");
    });
  }
  return 0;
}
