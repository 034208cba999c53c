// `trainbench compare`'s text and CSV: the tables compare.cpp builds, as aligned columns and as
// one CSV row per entry.
#include <fmt/format.h>

#include <cmath>

#include "report/compare.h"

namespace tb {

namespace {

std::string opt_fmt(const std::optional<double>& v, const char* spec, double scale = 1) {
  if (!v) return "unknown";
  return fmt::format(fmt::runtime(spec), *v * scale);
}

// Three decimals, or three significant digits below 0.01 (a CPU against an H100's peak).
std::string ratio_text(const std::optional<double>& v, const char* suffix) {
  if (!v) return "unknown";
  if (*v != 0 && std::abs(*v) < 0.01) return fmt::format("{:.3g}{}", *v, suffix);
  return fmt::format("{:.3f}{}", *v, suffix);
}

std::string cpu_cell(const CompareEntry& e) {
  if (!e.cpu_pct) return "unknown";
  return fmt::format("{:.1f} {}", *e.cpu_pct, e.cpu_what);
}

std::string gpu_cell(const CompareEntry& e) {
  if (!e.util_note.empty()) return e.util_note;
  if (e.gpu_pct) return fmt::format("{:.1f}", *e.gpu_pct);
  return e.device_kind == "cpu" ? "-" : "unknown";
}

}  // namespace

std::vector<std::string> compare_headers() {
  return {"#",        "implementation", "device",       "precision", "train+test s",
          "images/s", "test acc",       "time / #1",    "peak / #1", "delivered",
          "MFU",      "CPU % (train)",  "GPU % (train)"};
}

std::vector<std::string> compare_cells(const CompareEntry& e, size_t index) {
  return {std::to_string(index + 1),
          e.label,
          e.device,
          e.precision,
          opt_fmt(e.train_test_s, e.projected ? "{:.2f} projected" : "{:.2f}"),
          opt_fmt(e.images_per_s, e.images_per_s_derived ? "{:.0f} derived" : "{:.0f}"),
          opt_fmt(e.test_accuracy, "{:.4f}"),
          ratio_text(e.time_ratio, "x"),
          ratio_text(e.peak_ratio, "x"),
          ratio_text(e.delivered, ""),
          opt_fmt(e.mfu, "{:.2f}%", 100),
          cpu_cell(e),
          gpu_cell(e)};
}

namespace {

std::string render_columns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(rows.front().size(), 0);
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      const bool left = i >= 1 && i <= 3;  // label, device, precision
      line += left ? fmt::format("{:<{}}", r[i], width[i]) : fmt::format("{:>{}}", r[i], width[i]);
      if (i + 1 < r.size()) line += "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

std::string csv_num(const std::optional<double>& v) {
  return v ? fmt::format("{}", *v) : "";
}

// What the CSV's time and images/s are: measured, projected (a partial run), or the seed
// article's (published, and images/s derived from it).
std::string time_basis(const CompareEntry& e) {
  return e.file.empty() ? "published" : e.projected ? "projected" : "measured";
}
std::string rate_basis(const CompareEntry& e) {
  if (!e.images_per_s) return "";
  return e.images_per_s_derived ? "derived" : "measured";
}

}  // namespace

std::string format_compare_text(const Comparison& c) {
  std::string out;
  for (const CompareTable& t : c.tables) {
    out += fmt::format("{} ({} row{})\n", t.workload, t.rows.size(), t.rows.size() == 1 ? "" : "s");
    std::vector<std::vector<std::string>> rows = {compare_headers()};
    for (size_t i = 0; i < t.rows.size(); ++i) rows.push_back(compare_cells(t.rows[i], i));
    out += render_columns(rows);
    for (const std::string& n : t.notes) out += "  " + n + "\n";
    for (const nlohmann::json& p : t.profiles)
      out += fmt::format("  per-layer profile: {} (in the HTML report)\n", p.value("file", ""));
    out += "\n";
  }
  out +=
      "time / #1: train+test time over #1's. peak / #1: datasheet peak FLOP/s (precision used) "
      "over "
      "#1's.\n"
      "delivered = (time of #1 / time) / (peak / peak of #1): the share of the peak advantage the "
      "software turned into speed (1 = all of it).\n"
      "MFU: steady training FLOP/s over the datasheet peak. CPU %: process CPU over usable CPUs "
      "while training (\"machine\": whole machine, whole run, as PyTorch peers record it).\n";
  return out;
}

std::string format_compare_csv(const Comparison& c) {
  std::string out =
      "workload,row,implementation,device,precision,file,train_test_s,images_per_s_steady,"
      "test_accuracy,time_ratio,peak_flops_per_s,peak_ratio,delivered,mfu,cpu_pct,cpu_source,"
      "gpu_busy_pct,gpu_note,train_test_s_is,images_per_s_is\n";
  for (const CompareTable& t : c.tables) {
    for (size_t i = 0; i < t.rows.size(); ++i) {
      const CompareEntry& e = t.rows[i];
      std::vector<std::string> f = {
          csv_field(t.workload),   std::to_string(i + 1),   csv_field(e.label),
          csv_field(e.device),     csv_field(e.precision),  csv_field(e.file),
          csv_num(e.train_test_s), csv_num(e.images_per_s), csv_num(e.test_accuracy),
          csv_num(e.time_ratio),   csv_num(e.peak),         csv_num(e.peak_ratio),
          csv_num(e.delivered),    csv_num(e.mfu),          csv_num(e.cpu_pct),
          csv_field(e.cpu_what),   csv_num(e.gpu_pct),      csv_field(e.util_note)};
      f.push_back(time_basis(e)), f.push_back(rate_basis(e));
      out += fmt::format("{}\n", fmt::join(f, ","));
    }
  }
  return out;
}

}  // namespace tb
