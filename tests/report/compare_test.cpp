// `trainbench compare`: ratio arithmetic on made-up records, refusals that say what differs,
// --force, unreadable inputs named, CSV content, seed rows, PyTorch peer records.
#include "report/compare.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <sstream>

#include "../data/data_test_util.h"
#include "bench/peaks.h"
#include "core/error.h"
#include "core/gzio.h"
#include "report/record.h"
#include "report_test_util.h"

namespace tb {
namespace {

using nlohmann::json;
using testing::fake_record;
using testing::FakeRun;
using testing::ReportDir;

Comparison compare_two(const FakeRun& a, const FakeRun& b, CompareSettings s = {}) {
  return compare_inputs({fake_record(a), fake_record(b)}, {"a.json", "b.json"}, s);
}

// The message of the Error that f throws ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Compare, RatioArithmetic) {
  FakeRun a, b;
  a.train_test_s = 10, a.peak = 10e12;
  b.device = "GPU B", b.train_test_s = 4, b.peak = 40e12, b.mfu = 0.025;
  const Comparison c = compare_two(a, b);
  ASSERT_EQ(c.tables.size(), 1u);
  const auto& rows = c.tables[0].rows;
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_DOUBLE_EQ(*rows[0].time_ratio, 1.0);
  EXPECT_DOUBLE_EQ(*rows[0].delivered, 1.0);
  EXPECT_DOUBLE_EQ(*rows[1].time_ratio, 0.4);  // 4 s / 10 s
  EXPECT_DOUBLE_EQ(*rows[1].peak_ratio, 4.0);  // 40 / 10 TFLOP/s
  // 2.5x faster on a 4x faster device: 62.5% of the advantage delivered.
  EXPECT_DOUBLE_EQ(*rows[1].delivered, 0.625);
  EXPECT_DOUBLE_EQ(*rows[1].mfu, 0.025);
  EXPECT_DOUBLE_EQ(*rows[1].cpu_pct, 35.5);  // the train phase, not the whole run
  EXPECT_EQ(rows[1].cpu_what, "process");
  EXPECT_DOUBLE_EQ(*rows[1].gpu_pct, 61.25);

  const std::string text = format_compare_text(c);
  for (const char* s : {"0.400x", "4.000x", "0.625", "2.50%", "35.5 process", "61.2", "GPU B"})
    EXPECT_NE(text.find(s), std::string::npos) << s << "\n" << text;
}

TEST(Compare, UnknownPeakSaysUnknown) {
  FakeRun a, b;
  b.device = "Mystery GPU", b.peak = 0, b.mfu = 0;
  const Comparison c = compare_two(a, b);
  const CompareEntry& e = c.tables[0].rows[1];
  EXPECT_FALSE(e.peak_ratio);
  EXPECT_FALSE(e.delivered);
  EXPECT_TRUE(e.time_ratio);
  const std::vector<std::string> cells = compare_cells(e, 1);
  EXPECT_EQ(cells[8], "unknown");   // peak / #1
  EXPECT_EQ(cells[9], "unknown");   // delivered
  EXPECT_EQ(cells[10], "unknown");  // MFU
}

TEST(Compare, DifferentWorkloadsRefusedNamingBoth) {
  FakeRun a, b;
  b.workload = "resnet50-cifar10";
  const std::string msg = error_of([&] { compare_two(a, b); });
  EXPECT_NE(msg.find("a.json is fashion-mlp"), std::string::npos) << msg;
  EXPECT_NE(msg.find("b.json is resnet50-cifar10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--force"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

TEST(Compare, DifferentSettingsRefusedSayingWhat) {
  FakeRun a, b;
  b.epochs = 1, b.steps = 1875;
  const std::string msg = error_of([&] { compare_two(a, b); });
  EXPECT_NE(msg.find("epochs (a.json: 10, b.json: 1)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("steps (a.json: 18750, b.json: 1875)"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("batch"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

// A record without a peak (a PyTorch peer on a CPU) takes the peak of a row on the same device,
// precision and threads: its peak ratio and MFU are then known. Not across thread counts.
TEST(Compare, PeakSharedOnTheSameDevice) {
  FakeRun peer, ours;
  peer.kind = ours.kind = "cpu", peer.device = ours.device = "CPU X";
  peer.peak = 0, peer.mfu = 0;  // none in the record
  ours.peak = 1e11;
  json a = fake_record(peer), b = fake_record(ours);
  a["threads"] = b["threads"] = 2;
  Comparison c = compare_inputs({a, b}, {"peer.json", "ours.json"}, {});
  const CompareEntry& row = c.tables[0].rows[0];
  ASSERT_TRUE(row.peak);
  EXPECT_EQ(*row.peak, 1e11);
  EXPECT_EQ(row.peak_shared_from, 2);
  ASSERT_TRUE(row.mfu);
  EXPECT_DOUBLE_EQ(*row.mfu, 409088.0 * 1000 / 1e11);  // FLOPs per image x steady img/s / peak
  EXPECT_DOUBLE_EQ(*c.tables[0].rows[1].peak_ratio, 1.0);
  EXPECT_NE(format_compare_text(c).find("(#2's: the same device, precision and threads"),
            std::string::npos);
  a["threads"] = 1;
  c = compare_inputs({a, b}, {"peer.json", "ours.json"}, {});
  EXPECT_FALSE(c.tables[0].rows[0].peak);
  EXPECT_FALSE(c.tables[0].rows[0].mfu);
}

// An N-rank record against a 1-rank one on the same device: throughput_N / (N x throughput_1);
// none against another device's.
TEST(Compare, ScalingEfficiencyAgainstOneRank) {
  FakeRun one, two, other;
  one.kind = two.kind = other.kind = "cpu";
  one.device = two.device = "CPU X", other.device = "CPU Y";
  one.images_per_s = 1000, two.images_per_s = 1500, other.images_per_s = 900;
  json a = fake_record(other), b = fake_record(two), c1 = fake_record(one);
  b["ranks"] = {{"world_size", 2}};
  c1["ranks"] = {{"world_size", 1}};
  Comparison c = compare_inputs({a, b, c1}, {"other.json", "two.json", "one.json"}, {});
  const CompareEntry& row = c.tables[0].rows[1];
  EXPECT_EQ(row.world_size, 2);
  EXPECT_NE(row.label.find("x2 ranks"), std::string::npos) << row.label;
  ASSERT_TRUE(row.scaling_efficiency);
  EXPECT_DOUBLE_EQ(*row.scaling_efficiency, 1500.0 / (2 * 1000.0));
  EXPECT_EQ(row.scaling_against, 3);
  EXPECT_DOUBLE_EQ(*row.peak, 2 * 10e12);  // the record's peak is one rank's device's
  EXPECT_NE(format_compare_text(c).find("#2 2 ranks: scaling efficiency 0.750 against #3"),
            std::string::npos)
      << format_compare_text(c);
  b["device"]["name"] = "CPU Z";  // no 1-rank record of its device
  c = compare_inputs({a, b, c1}, {"other.json", "two.json", "one.json"}, {});
  EXPECT_FALSE(c.tables[0].rows[1].scaling_efficiency);
  EXPECT_NE(format_compare_text(c).find("no 1-rank record of the same device"), std::string::npos);
}

// A resumed or interrupted run did other work than a whole one: its steps say so, and the
// settings check tells them apart.
TEST(Compare, ResumedAndInterruptedRunsSaySo) {
  json r = fake_record(FakeRun{});
  r["resumed_epochs"] = 1, r["resumed_steps"] = 625;
  EXPECT_EQ(entry_from_record(r, "r.json").steps, "18750 after 1 resumed epochs and 625 steps");
  r["resumed_steps"] = 0, r["interrupted"] = true;
  EXPECT_EQ(entry_from_record(r, "r.json").steps, "18750 after 1 resumed epochs (interrupted)");
  r.erase("resumed_steps");  // a record from before steps were kept
  r["resumed_epochs"] = 0, r["interrupted"] = false;
  EXPECT_EQ(entry_from_record(r, "r.json").steps, "18750");
}

// Records that are valid JSON but typed oddly are read leniently or refused in one line, never
// an exception of the JSON library or undefined behaviour: a number for `kind`, a string for
// `interrupted`, counts no integer can hold, a profile inside a record with a number for its
// workload, nesting deeper than any record has (copying it recursed until the stack overflowed).
TEST(Compare, OddlyTypedRecordsAreReadOrRefusedCleanly) {
  json r = fake_record(FakeRun{});
  r["kind"] = 2, r["interrupted"] = "yes", r["resumed_epochs"] = 1e300, r["resumed_steps"] = -3;
  const json back = parse_compare_input(r.dump(), "odd.json");
  EXPECT_EQ(entry_from_record(back, "odd.json").steps, "18750");

  r["profile"] = {{"workload", 5}, {"layers", json::array()}};
  EXPECT_EQ(error_of([&] { compare_inputs({r}, {"odd.json"}, {}); }),
            "odd.json: a profile of '5', but no record of that workload among the inputs");

  const std::string deep = R"({"workload": "w", "times_s": {"train_test": 1}, "x": )" +
                           std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_EQ(error_of([&] { parse_compare_input(deep, "deep.json"); }),
            "deep.json: nested more than 64 levels deep (not a record or profile)");
  std::istringstream in(deep);
  EXPECT_EQ(error_of([&] { read_record(in, "deep.json"); }),
            "deep.json: nested more than 64 levels deep (not a result record)");
}

TEST(Compare, PrecisionMayDiffer) {
  FakeRun a, b;
  b.precision = "bf16";
  const Comparison c = compare_two(a, b);
  EXPECT_EQ(c.tables[0].rows[1].precision, "bf16");
  EXPECT_NE(format_compare_text(c).find("bf16"), std::string::npos);
}

TEST(Compare, ForceAcceptsAndNotes) {
  FakeRun a, b, d;
  b.epochs = 1, b.steps = 1875;
  d.workload = "resnet50-cifar10";
  CompareSettings s;
  s.force = true;
  const Comparison c =
      compare_inputs({fake_record(a), fake_record(b), fake_record(d)}, {"a", "b", "d"}, s);
  ASSERT_EQ(c.tables.size(), 2u);  // one per workload, in first-seen order
  EXPECT_EQ(c.tables[0].workload, "fashion-mlp");
  EXPECT_EQ(c.tables[0].rows.size(), 2u);
  EXPECT_EQ(c.tables[1].rows.size(), 1u);
  bool noted = false;
  for (const std::string& n : c.tables[0].notes) noted |= n.find("epochs (a: 10, b: 1)") != n.npos;
  EXPECT_TRUE(noted);
}

TEST(Compare, UnreadableInputsNameTheFile) {
  ReportDir dir;
  std::string full = fake_record(FakeRun{}).dump(2);
  const std::string truncated = dir.write("truncated.json", full.substr(0, full.size() / 2));
  const std::string garbage = dir.write("garbage.json", "this is not json");
  const std::string empty = dir.write("empty.json", "");
  const std::string array = dir.write("array.json", "[1, 2, 3]");
  const std::string missing = (dir.path / "missing.json").string();
  for (const std::string& f : {truncated, garbage, empty, array, missing}) {
    const std::string msg = error_of([&] { compare_files({f}, {}); });
    EXPECT_NE(msg.find(f), std::string::npos) << f << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // The bad file is named even when a good one comes first.
  const std::string good = dir.write_json("good.json", fake_record(FakeRun{}));
  EXPECT_NE(error_of([&] {
              compare_files({good, truncated}, {});
            }).find(truncated),
            std::string::npos);
}

// Records gzipped (as the large ones under bench/results are) read as the plain ones do; a cut-off
// or oversized gzip file is refused naming it.
TEST(Compare, GzippedRecordsReadAsPlain) {
  ReportDir dir;
  FakeRun b;
  b.device = "GPU B", b.train_test_s = 5;
  const std::string a_plain = dir.write_json("a.json", fake_record(FakeRun{}));
  const std::string b_plain = dir.write_json("b.json", fake_record(b));
  const std::string b_text = testing::read_file(b_plain);
  const std::string a_gz = (dir.path / "a.json.gz").string(),
                    b_gz = (dir.path / "b.json.gz").string();
  for (const auto& [from, to] : {std::pair{a_plain, a_gz}, std::pair{b_plain, b_gz}}) {
    const std::string text = testing::read_file(from);
    testing::write_gz(to, std::vector<uint8_t>(text.begin(), text.end()));
  }
  EXPECT_EQ(read_record(b_gz), read_record(b_plain));
  EXPECT_EQ(read_compare_input(b_gz), read_compare_input(b_plain));
  const Comparison c = compare_files({a_gz, b_gz}, {});
  ASSERT_EQ(c.tables.size(), 1u);
  ASSERT_EQ(c.tables[0].rows.size(), 2u);
  EXPECT_DOUBLE_EQ(*c.tables[0].rows[1].time_ratio, 0.5);

  const std::string gz_bytes = testing::read_file(b_gz);
  const std::string cut = dir.write("cut.json.gz", gz_bytes.substr(0, gz_bytes.size() / 2));
  const std::string msg = error_of([&] { compare_files({cut}, {}); });
  EXPECT_NE(msg.find(cut), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { gzio::read_text(b_gz, b_text.size() - 1); }).find("larger than"),
            std::string::npos);
  EXPECT_EQ(gzio::read_text(b_gz, b_text.size()), b_text);
}

TEST(Compare, CsvContent) {
  FakeRun a, b;
  b.device = "GPU, with a comma", b.train_test_s = 5, b.peak = 20e12;
  const std::string csv = format_compare_csv(compare_two(a, b));
  std::vector<std::string> lines;
  for (size_t at = 0, nl; (nl = csv.find('\n', at)) != std::string::npos; at = nl + 1)
    lines.push_back(csv.substr(at, nl - at));
  ASSERT_EQ(lines.size(), 3u) << csv;
  EXPECT_EQ(lines[0].rfind("workload,row,implementation,device,precision,file,train_test_s,", 0),
            0u);
  EXPECT_EQ(
      lines[1].rfind("fashion-mlp,1,trainbench 0.1.0 cuda,GPU A,fp32,a.json,10,1000,0.88,1,", 0),
      0u)
      << lines[1];
  // Quoted device; time ratio 0.5, peak 2e13, peak ratio 2, delivered (10/5)/2 = 1.
  EXPECT_NE(lines[2].find("\"GPU, with a comma\",fp32,b.json,5,1000,0.88,0.5,20000000000000,2,1,"),
            std::string::npos)
      << lines[2];
}

TEST(Compare, WriteTextAtomic) {
  ReportDir dir;
  const std::string p = (dir.path / "sub" / "out.csv").string();
  write_text_atomic(p, "one\n");
  write_text_atomic(p, "two\n");
  EXPECT_EQ(testing::read_file(p), "two\n");
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path / "sub"))
    files += e.is_regular_file();
  EXPECT_EQ(files, 1u);  // no temporary left behind
  EXPECT_NE(error_of([&] { write_text_atomic("/proc/no/such/dir/x.csv", "x"); }).find("x.csv"),
            std::string::npos);
}

TEST(Compare, SeedRows) {
  FakeRun a;
  a.train_test_s = 7.78 / 2;
  CompareSettings s;
  s.with_seed = true;
  const Comparison c = compare_inputs({fake_record(a)}, {"a.json"}, s);
  const auto& rows = c.tables[0].rows;
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1].device, "RTX 2080 Ti");
  EXPECT_DOUBLE_EQ(*rows[1].train_test_s, 7.78);
  EXPECT_DOUBLE_EQ(*rows[2].train_test_s, 6.70);
  EXPECT_DOUBLE_EQ(*rows[1].time_ratio, 2.0);
  const double p2080 = *gpu_peaks("RTX 2080 Ti")->fp32, pm1 = *gpu_peaks("Apple M1")->fp32;
  EXPECT_DOUBLE_EQ(*rows[1].peak, p2080);
  EXPECT_DOUBLE_EQ(*rows[2].peak, pm1);
  // M1 against the 2080 Ti, as the article would have: (7.78 / 6.70) / (pm1 / p2080).
  std::vector<CompareEntry> seed = seed_entries("fashion-mlp");
  fill_ratios(seed);
  EXPECT_NEAR(*seed[1].delivered, (7.78 / 6.70) / (pm1 / p2080), 1e-12);
  EXPECT_TRUE(seed_entries("resnet50-cifar10").size() == 2);
  EXPECT_DOUBLE_EQ(*seed_entries("resnet50-cifar10")[1].train_test_s, 2286.16);
}

// The seed article's images/s are derived from its time (10 epochs of the training set over
// train+test), and say so.
TEST(Compare, SeedImagesPerSecondDerived) {
  const std::vector<CompareEntry> seed = seed_entries("resnet50-cifar10");
  EXPECT_DOUBLE_EQ(*seed[0].images_per_s, 500000 / 418.73);
  EXPECT_TRUE(seed[0].images_per_s_derived);
  EXPECT_EQ(compare_cells(seed[0], 1)[5], "1194 derived");
  EXPECT_DOUBLE_EQ(*seed_entries("fashion-mlp")[1].images_per_s, 600000 / 6.70);
}

// A short run of fashion-mlp (33 steps, a sampled test pass) with its projection.
json partial_record() {
  FakeRun f;
  f.steps = 33, f.train_test_s = 0.5;
  json r = fake_record(f);
  r["stopped_by_steps"] = true;
  r["projected"] = {{"times_s", {{"train_test", 5000.0}}},
                    {"steps", 18750},
                    {"from",
                     {{"train_images", 1056},
                      {"of_train_images", 600000},
                      {"test_images", 320},
                      {"of_test_images", 10000}}}};
  return r;
}

// Against a whole run (a record or the seed article's rows) a partial run's row shows its
// projected time, labelled; the settings check then sees the whole run's steps. Among partial
// runs only, the measured times compare as they are.
TEST(Compare, ProjectionStandsInAgainstWholeRuns) {
  FakeRun whole;
  whole.train_test_s = 2500;
  Comparison c = compare_inputs({fake_record(whole), partial_record()}, {"w.json", "p.json"}, {});
  const CompareEntry& row = c.tables[0].rows[1];
  EXPECT_TRUE(row.projected);
  EXPECT_DOUBLE_EQ(*row.train_test_s, 5000);
  EXPECT_DOUBLE_EQ(*row.time_ratio, 2);
  EXPECT_EQ(compare_cells(row, 1)[4], "5000.00 projected");
  EXPECT_NE(format_compare_text(c).find("#2 train+test time projected to the whole run from 1056 "
                                        "of 600000 training images, 320 of 10000 test images"),
            std::string::npos)
      << format_compare_text(c);
  EXPECT_NE(format_compare_csv(c).find(",projected,measured\n"), std::string::npos);

  c = compare_inputs({partial_record(), partial_record()}, {"p.json", "q.json"}, {});
  EXPECT_FALSE(c.tables[0].rows[1].projected);
  EXPECT_DOUBLE_EQ(*c.tables[0].rows[1].train_test_s, 0.5);
  EXPECT_EQ(compare_cells(c.tables[0].rows[1], 1)[4], "0.50");

  CompareSettings s;
  s.with_seed = true;
  c = compare_inputs({partial_record()}, {"p.json"}, s);
  EXPECT_TRUE(c.tables[0].rows[0].projected);
  EXPECT_DOUBLE_EQ(*c.tables[0].rows[1].time_ratio, 7.78 / 5000);
  for (const std::string& n : c.tables[0].notes)
    EXPECT_EQ(n.find("compare different work"), std::string::npos) << n;
  EXPECT_NE(format_compare_csv(c).find(",published,derived\n"), std::string::npos);
}

// A PyTorch peer's record on the H100 with the keys every one has.
json peer_record(const std::string& version, const std::string& workload,
                 const std::string& precision) {
  return {
      {"peer", "pytorch"},      {"torch_version", version},
      {"workload", workload},   {"device", {{"kind", "cuda"}, {"name", "NVIDIA H100 80GB HBM3"}}},
      {"precision", precision}, {"times_s", {{"train_test", 20.0}}}};
}

TEST(Compare, PytorchPeerRecord) {
  json peer = peer_record("2.11.0+cu130", "fashion-mlp", "fp32");
  peer.update({{"batch", 32},
               {"epochs", 10},
               {"steps", 18750},
               {"throughput", {{"train_images_per_s_steady", 30000.0}}},
               {"accuracy", {{"test", 0.88}}},
               {"flops", {{"per_train_image", 609792}, {"per_train_image_contract", 409088}}},
               {"utilisation", {{"mean", {{"cpu_busy_pct", 6.1}, {"gpu_busy_pct", 3.0}}}}}});
  const CompareEntry e = entry_from_record(peer, "torch.json");
  EXPECT_EQ(e.label, "pytorch 2.11.0+cu130");
  ASSERT_TRUE(e.peak);
  EXPECT_TRUE(e.peak_looked_up);
  EXPECT_DOUBLE_EQ(*e.peak, gpu_peak("NVIDIA H100 80GB HBM3", Precision::fp32)->flops_per_s);
  EXPECT_DOUBLE_EQ(*e.mfu, 409088.0 * 30000.0 / *e.peak);  // the contract's FLOP count
  EXPECT_EQ(e.cpu_what, "machine");
  EXPECT_DOUBLE_EQ(*e.cpu_pct, 6.1);
  EXPECT_DOUBLE_EQ(*e.gpu_pct, 3.0);
}

// Settings that change how a run goes are part of its name: PyTorch's channels_last and
// torch.compile, trainbench's channels-last bf16 copies.
TEST(Compare, LabelsNameLayoutAndCompile) {
  json peer = peer_record("2.11.0", "resnet50-cifar10", "bf16");
  peer["peer_options"] = {{"channels_last", true}, {"compile", true}};
  EXPECT_EQ(entry_from_record(peer, "t.json").label, "pytorch 2.11.0 channels_last compile");
  peer["peer_options"]["compile"] = false;
  EXPECT_EQ(entry_from_record(peer, "t.json").label, "pytorch 2.11.0 channels_last");
  json tb = {{"trainbench_version", "0.5"},
             {"workload", "resnet50-cifar10"},
             {"device", {{"kind", "cuda"}, {"name", "NVIDIA H100 80GB HBM3"}, {"backend", "cuda"}}},
             {"precision", "bf16"},
             {"conv_layout", "nhwc"},
             {"times_s", {{"train_test", 10.0}}}};
  EXPECT_EQ(entry_from_record(tb, "tb.json").label, "trainbench 0.5 cuda nhwc");
  tb["conv_layout"] = "nchw";
  EXPECT_EQ(entry_from_record(tb, "tb.json").label, "trainbench 0.5 cuda");
  tb["activations"] = "nchw";  // CUDA's maps are always NCHW: nothing to tell apart
  EXPECT_EQ(entry_from_record(tb, "tb.json").label, "trainbench 0.5 cuda");
  tb["device"]["backend"] = "cpu-onednn";
  EXPECT_EQ(entry_from_record(tb, "tb.json").label, "trainbench 0.5 cpu-onednn nchw");  // --nchw
  tb["activations"] = "nhwc";
  EXPECT_EQ(entry_from_record(tb, "tb.json").label, "trainbench 0.5 cpu-onednn");
}

TEST(Compare, ProfileInputsGoToTheirWorkload) {
  json profile = {{"workload", "fashion-mlp"}, {"device", "cpu"}, {"layers", json::array()}};
  const Comparison c =
      compare_inputs({fake_record(FakeRun{}), profile}, {"a.json", "p.json"}, CompareSettings{});
  ASSERT_EQ(c.tables.size(), 1u);
  EXPECT_EQ(c.tables[0].rows.size(), 1u);
  ASSERT_EQ(c.tables[0].profiles.size(), 1u);
  EXPECT_EQ(c.tables[0].profiles[0]["file"], "p.json");
  profile["workload"] = "resnet50-cifar10";
  EXPECT_NE(error_of([&] {
              compare_inputs({fake_record(FakeRun{}), profile}, {"a.json", "p.json"}, {});
            }).find("p.json"),
            std::string::npos);
}

// The H100 records in the repository: trainbench ran 10 epochs, the PyTorch peer 1.
TEST(Compare, RepositoryRecords) {
  const std::string dir = std::string(TRAINBENCH_SOURCE_DIR) + "/bench/results/h100-2026-11-27/";
  const std::string tb_rec = dir + "trainbench_fashion_mlp_cuda_fp32.json";
  const std::string torch_rec = dir + "torch_fashion_mlp_cuda_fp32_1epoch.json";
  if (!std::filesystem::exists(tb_rec) || !std::filesystem::exists(torch_rec))
    GTEST_SKIP() << "bench/results/h100-2026-11-27 not present";
  EXPECT_NE(error_of([&] {
              compare_files({tb_rec, torch_rec}, {});
            }).find("epochs"),
            std::string::npos);
  CompareSettings s;
  s.force = true;
  const Comparison c = compare_files({tb_rec, torch_rec}, s);
  ASSERT_EQ(c.tables[0].rows.size(), 2u);
  EXPECT_EQ(c.tables[0].rows[1].label.rfind("pytorch ", 0), 0u);
  EXPECT_DOUBLE_EQ(*c.tables[0].rows[1].peak_ratio, 1.0);  // same H100, same precision
}

// Every record kept under bench/results, plain or gzipped, reads back as JSON; none over 50 KB is
// kept plain, since a device call carries the tracked tree beside the data sets (64 MiB in all).
TEST(Compare, RepositoryResultsAllRead) {
  const std::filesystem::path dir = std::filesystem::path(TRAINBENCH_SOURCE_DIR) / "bench/results";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "bench/results not present";
  size_t plain = 0, gzipped = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    const std::string p = e.path().string();
    const bool gz = p.size() > 8 && p.compare(p.size() - 8, 8, ".json.gz") == 0;
    if (!gz && e.path().extension() != ".json") continue;
    (gz ? gzipped : plain) += 1;
    EXPECT_TRUE(gz || e.file_size() <= 50'000) << p << ": over 50 KB, keep it gzipped (gzip -9n)";
    EXPECT_NO_THROW(nlohmann::json::parse(gzio::read_text(p, kMaxRecordBytes))) << p;
  }
  EXPECT_GT(plain, 0u);
  EXPECT_GT(gzipped, 0u);
}

// The command line: one line on stderr naming the file, non-zero exit; outputs written.
int run_cli(const std::string& args, std::string* err) {
  ReportDir dir;
  const std::string err_file = (dir.path / "err").string();
  const std::string cmd = std::string(TRAINBENCH_BINARY) + " " + args + " >/dev/null 2>" + err_file;
  const int st = std::system(cmd.c_str());
  *err = testing::read_file(err_file);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(Compare, CommandLine) {
  ReportDir dir;
  std::string err;
  EXPECT_NE(run_cli("compare " + (dir.path / "nope.json").string(), &err), 0);
  EXPECT_NE(err.find("nope.json"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;

  FakeRun b;
  b.device = "GPU B", b.train_test_s = 5;
  const std::string a_file = dir.write_json("a.json", fake_record(FakeRun{}));
  const std::string b_file = dir.write_json("b.json", fake_record(b));
  const std::string csv = (dir.path / "out.csv").string(), html = (dir.path / "out.html").string();
  ASSERT_EQ(run_cli("compare " + a_file + " " + b_file + " --csv " + csv + " --html " + html +
                        " --with-seed",
                    &err),
            0)
      << err;
  EXPECT_NE(testing::read_file(csv).find("GPU B"), std::string::npos);
  EXPECT_NE(testing::read_file(html).find("RTX 2080 Ti"), std::string::npos);
}

}  // namespace
}  // namespace tb
