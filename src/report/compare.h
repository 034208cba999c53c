// `trainbench compare`: result records of one workload side by side, as the seed article put its
// two machines, plus what it lacked (WORKLOADS.md "Comparing machines"): the time ratio to the
// first record, the datasheet peak ratio, their quotient (how much of a device's advantage the
// software delivered), MFU and utilisation.
//
//   delivered = (t_first / t_this) / (peak_this / peak_first)
//
// 1.0: the speed-up is exactly what the peak ratio predicts; below 1: the software left some of
// the faster device's advantage unused; above 1: the first record's software did.
//
// Inputs are trainbench records, PyTorch peer records ("peer": "pytorch", a subset of the keys)
// and `trainbench profile` JSONs (key "layers"), which only the HTML report shows.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>
#include "core/file.h"  // write_text_atomic, for the CSV and HTML

namespace tb {

// One row of a table: a record, or a figure the seed article published.
struct CompareEntry {
  std::string file;   // "" for the seed article's rows
  std::string label;  // "trainbench 0.1.0 cuda", "pytorch 2.11.0+cu130", "seed article: TF 2.4"
  std::string device, device_kind, precision, workload;
  std::optional<double> train_test_s, images_per_s, test_accuracy;
  std::optional<double> peak;  // FLOP/s for the precision used (all ranks' devices)
  std::string peak_source;
  bool peak_looked_up = false;  // the record had none; found by device name in peaks.h
  int peak_shared_from = 0;     // the record had none; taken from this row (1-based) of the table
  std::optional<double> mfu;
  std::optional<double> cpu_pct, gpu_pct;  // mean while training
  std::string cpu_what;                    // "process" or "machine" (PyTorch peers)
  std::string util_note;                   // seed rows: what the article said
  // Settings that change the work, as text ("" = not in the record).
  std::string batch, epochs, steps, augment;
  // A partial run's projection of its whole run (the record's "projected"), which the table
  // shows in place of the measured time where it holds a whole run to set it against.
  std::optional<double> projected_train_test_s;
  std::string whole_steps;     // the whole run's steps (the settings check of a projected row)
  std::string projected_from;  // "33 of 3910 steps, 1280 of 10000 test images"
  bool projected = false;      // train_test_s is the projection
  bool partial = false;        // trained or tested on part of the run (--steps, a sampled test)
  bool images_per_s_derived = false;  // seed rows: 10 epochs' images over train+test time
  // Filled by compare_entries: relative to the first row of the table.
  std::optional<double> time_ratio, peak_ratio, delivered;
  int world_size = 1;  // data-parallel ranks (records before them: 1)
  // Against a 1-rank row on the same device: throughput / (world_size x its throughput), and
  // which row (1-based).
  std::optional<double> scaling_efficiency;
  int scaling_against = 0;
  nlohmann::json record;  // the whole record (timeline, loss per epoch), null for seed rows
};

struct CompareTable {
  std::string workload;
  std::vector<CompareEntry> rows;
  std::vector<std::string> notes;        // --force differences, seed caveats, peak look-ups
  std::vector<nlohmann::json> profiles;  // `trainbench profile` JSONs of this workload
};

struct Comparison {
  std::vector<CompareTable> tables;
  std::vector<std::string> files;  // the inputs, as given
};

struct CompareSettings {
  bool with_seed = false;  // add the seed article's published rows
  bool force = false;      // compare records of different workloads or settings
};

// Reads a record or a profile JSON; throws Error naming the file when it is missing, truncated,
// not JSON, or neither.
nlohmann::json read_compare_input(const std::string& path);
// The same from a file's text, named `path` in messages.
nlohmann::json parse_compare_input(const std::string& text, const std::string& path);
bool is_profile_json(const nlohmann::json& j);

// One row from a record (trainbench or PyTorch peer).
CompareEntry entry_from_record(const nlohmann::json& r, const std::string& file);
// The seed article's published figures for a workload (none for other workloads).
std::vector<CompareEntry> seed_entries(const std::string& workload);
// One line saying which settings differ between rows (workload first), or "" when none do.
std::string settings_difference(const std::vector<CompareEntry>& rows);
// Time ratio, peak ratio and delivered share of every row against the first.
void fill_ratios(std::vector<CompareEntry>& rows);

// Groups the inputs by workload (first-seen order) and fills the ratios. Throws Error with the
// one-line difference when workloads or settings differ and !s.force.
Comparison compare_inputs(const std::vector<nlohmann::json>& inputs,
                          const std::vector<std::string>& files, const CompareSettings& s);
// Reads the files, then compare_inputs.
Comparison compare_files(const std::vector<std::string>& files, const CompareSettings& s);

// The table's header and the cells of row `index` (0-based), as text: shared by text and HTML.
std::vector<std::string> compare_headers();
std::vector<std::string> compare_cells(const CompareEntry& e, size_t index);

std::string format_compare_text(const Comparison& c);
std::string format_compare_csv(const Comparison& c);

}  // namespace tb
