// safetensors files and PyTorch's names, without PyTorch: the format read back as written, every
// kind of damage refused in one line naming the file (and the tensor), the names and shapes
// against the ones PyTorch gives (tests/fixtures/torch_state_dicts.txt), and a checkpoint's
// weights exported and read back to the bit. tests/train/torch_roundtrip.py checks the same files
// in PyTorch itself.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "../data/data_test_util.h"
#include "models/torch_names.h"
#include "train/safetensors.h"
#include "train/torch_weights.h"

namespace tb {
namespace {

using testing::error_of;

std::string le64(uint64_t v) {
  return std::string(reinterpret_cast<const char*>(&v), 8);
}

// A file of the given header text and data bytes.
std::string file_of(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

// Parsing `bytes` fails with one line that names the file and holds `mentions`.
void expect_refused(const std::string& bytes, const std::string& mentions) {
  const std::string e = error_of([&] { SafeTensorsReader r(std::string_view(bytes), "f.st"); });
  EXPECT_EQ(e.rfind("f.st: ", 0), 0u) << e;
  EXPECT_NE(e.find(mentions), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

TEST(Safetensors, ReadsBackWhatItWrites) {
  const float a[6] = {1, -2, 3.5f, 0, 1e-30f, -7};
  const int64_t b = -42;
  const uint8_t c[3] = {1, 2, 255};
  const std::vector<SafeTensorOut> tensors = {
      {"a.weight", StDtype::F32, {2, 3}, a},
      {"b", StDtype::I64, {}, &b},
      {"empty", StDtype::F32, {0, 4}, nullptr},
      {"c", StDtype::U8, {3}, c},
  };
  const std::string bytes = safetensors_bytes({{"workload", "x"}, {"format", "pt"}}, tensors);
  uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  EXPECT_EQ((8 + header) % 8, 0u);  // the data aligned, as the reference writer does
  EXPECT_EQ(bytes.size(), 8 + header + 24 + 8 + 3);

  SafeTensorsReader r(std::string_view(bytes), "mem");
  EXPECT_EQ(r.metadata(),
            (std::map<std::string, std::string>{{"workload", "x"}, {"format", "pt"}}));
  ASSERT_EQ(r.tensors().size(), 4u);
  EXPECT_EQ(r.tensors()[0].name, "a.weight");  // in the data's order: the order written
  const SafeTensorInfo* ta = r.find("a.weight");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->dtype, StDtype::F32);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  float got_a[6];
  r.read(*ta, got_a);
  EXPECT_EQ(std::memcmp(got_a, a, sizeof(a)), 0);
  const SafeTensorInfo* tb_ = r.find("b");
  ASSERT_NE(tb_, nullptr);
  EXPECT_TRUE(tb_->shape.empty());
  EXPECT_EQ(tb_->numel(), 1);
  int64_t got_b = 0;
  r.read(*tb_, &got_b);
  EXPECT_EQ(got_b, b);
  EXPECT_EQ(r.find("empty")->numel(), 0);
  uint8_t got_c[3];
  r.read(*r.find("c"), got_c);
  EXPECT_EQ(got_c[2], 255);
  EXPECT_EQ(r.find("nope"), nullptr);

  // The file on disk is the same bytes, and reads the same.
  testing::TempDir dir;
  write_safetensors(dir / "t.safetensors", {{"workload", "x"}, {"format", "pt"}}, tensors);
  std::ifstream in(dir / "t.safetensors", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), bytes);
  SafeTensorsReader f(dir / "t.safetensors");
  r.read(*f.find("a.weight"), got_a);
  EXPECT_EQ(std::memcmp(got_a, a, sizeof(a)), 0);
}

// The reference writer orders tensors by dtype and name, not by offset; any order of the header
// reads, as long as the offsets tile the data.
TEST(Safetensors, ReadsAHeaderInAnyOrder) {
  const std::string header = R"({"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("a":{"dtype":"I32","shape":[2],"data_offsets":[4,12]}})";
  SafeTensorsReader r(file_of(header, std::string(12, '\1')), "mem");
  ASSERT_EQ(r.tensors().size(), 2u);
  EXPECT_EQ(r.tensors()[0].name, "z");
  EXPECT_EQ(r.find("a")->dtype, StDtype::I32);
  EXPECT_TRUE(r.metadata().empty());
}

TEST(Safetensors, RefusesDamageInOneLine) {
  auto entry = [](const std::string& dtype, const std::string& shape, uint64_t b, uint64_t e) {
    return "{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
           std::to_string(b) + "," + std::to_string(e) + "]}";
  };
  const std::string one = "{\"w\":" + entry("F32", "[2]", 0, 8) + "}";
  const std::string good = file_of(one, std::string(8, '\0'));
  SafeTensorsReader ok(std::string_view(good), "f.st");  // the base case reads

  expect_refused("", "not a safetensors file");
  expect_refused(std::string(7, '\0'), "not a safetensors file");
  expect_refused(le64(uint64_t(1) << 62) + one, "a header of 4611686018427387904 bytes");
  expect_refused(le64(one.size() + 1) + one, "truncated");
  expect_refused(file_of("[1, 2]", ""), "not a JSON object");
  expect_refused(file_of("{\"w\": ", ""), "not a JSON object");
  expect_refused(good.substr(0, good.size() - 1), "truncated");
  expect_refused(good + "x", "1 bytes after the last tensor");
  expect_refused(
      file_of("{\"w\":" + entry("F32", "[2]", 0, 8) + ",\"w\":" + entry("F32", "[2]", 0, 8) + "}",
              std::string(8, '\0')),
      "'w' given twice");
  expect_refused(file_of("{\"w\":" + entry("F31", "[2]", 0, 8) + "}", std::string(8, '\0')),
                 "'w': unknown dtype");
  expect_refused(file_of("{\"w\":" + entry("F32", "[3]", 0, 8) + "}", std::string(8, '\0')),
                 "'w': data_offsets [0, 8] for 12 bytes");
  expect_refused(file_of("{\"w\":" + entry("F32", "[-2]", 0, 8) + "}", std::string(8, '\0')),
                 "'w': shape holds something other than a size");
  expect_refused(file_of("{\"w\":" + entry("F32", "[2.0]", 0, 8) + "}", std::string(8, '\0')),
                 "'w': shape holds something other than a size");
  expect_refused(file_of("{\"w\":" + entry("F32", "[[2]]", 0, 8) + "}", std::string(8, '\0')),
                 "nested deeper");
  expect_refused(file_of("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", std::string(8, '\0')),
                 "'w': not an object of dtype, shape and data_offsets");
  expect_refused(file_of("{\"w\":" + entry("F32", "[2]", 8, 0) + "}", std::string(8, '\0')),
                 "'w': data_offsets [8, 0]");
  // A hole before a tensor, and two tensors over the same bytes.
  expect_refused(file_of("{\"w\":" + entry("F32", "[1]", 4, 8) + "}", std::string(8, '\0')),
                 "bytes before it belong to no tensor");
  expect_refused(
      file_of("{\"w\":" + entry("F32", "[2]", 0, 8) + ",\"v\":" + entry("F32", "[1]", 4, 8) + "}",
              std::string(8, '\0')),
      "the tensor before it ends later");
  expect_refused(file_of("{\"__metadata__\":{\"a\":1}," + one.substr(1), std::string(8, '\0')),
                 "'__metadata__': a value that is not a string");
  expect_refused(file_of("{\"__metadata__\":[]," + one.substr(1), std::string(8, '\0')),
                 "'__metadata__': not an object");
  // A control character in a name is quoted escaped: the message stays one line.
  expect_refused(file_of("{\"a\\nb\":" + entry("F32", "[3]", 0, 8) + "}", std::string(8, '\0')),
                 "'a\\x0ab'");
}

// Sizes a header declares are checked against the file before anything is allocated or read:
// a tiny file that claims terabytes, or sizes whose product overflows, is refused at once.
TEST(Safetensors, AbsurdSizesAreRefusedBeforeAllocation) {
  const uint64_t tera = uint64_t(1) << 40;
  expect_refused(file_of("{\"w\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(tera / 4) +
                             "],\"data_offsets\":[0," + std::to_string(tera) + "]}}",
                         std::string(8, '\0')),
                 "truncated ('w' ends at byte 1099511627776 of the data; the file holds 8)");
  expect_refused(file_of("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                         "\"data_offsets\":[0,8]}}",
                         std::string(8, '\0')),
                 "'w': shape too large");
  expect_refused(file_of("{\"w\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],"
                         "\"data_offsets\":[0,0]}}",
                         ""),
                 "'w': shape too large");
}

TEST(Safetensors, FileErrorsNameThePath) {
  testing::TempDir dir;
  EXPECT_TB_ERROR(SafeTensorsReader r(dir / "none.safetensors"), dir / "none.safetensors",
                  "not found");
  EXPECT_TB_ERROR(SafeTensorsReader r(dir.path.string()), "not a regular file");
  std::ofstream(dir / "short.safetensors") << "abc";
  EXPECT_TB_ERROR(SafeTensorsReader r(dir / "short.safetensors"), dir / "short.safetensors",
                  "not a safetensors file");
}

// The names, dtypes and shapes of state_dict(), in its order, as PyTorch 1.13 / torchvision 0.14
// give them (tests/fixtures/make_torch_names.py).
std::vector<std::string> pytorch_state_dict(const std::string& workload) {
  std::string path = std::string(TRAINBENCH_SOURCE_DIR) + "/tests/fixtures/torch_state_dicts.txt";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(workload + " ", 0) == 0) lines.push_back(line.substr(workload.size() + 1));
  return lines;
}

std::vector<std::string> trainbench_state_dict(const Model& m) {
  std::vector<std::string> lines;
  for (const TorchTensor& t : torch_state_dict(m)) {
    std::string dims;
    for (int64_t d : t.shape) {
      if (!dims.empty()) dims += ',';
      dims += std::to_string(d);
    }
    lines.push_back(t.name + " " + (t.slot == TorchTensor::Slot::updates ? "int64 " : "float32 ") +
                    dims);
  }
  return lines;
}

TEST(TorchNames, AreTheOnesPyTorchGives) {
  const Model mlp = build_mlp(1, 28, 28, {128}, 10);
  EXPECT_EQ(trainbench_state_dict(mlp), pytorch_state_dict("fashion-mlp"));
  const Model resnet = build_resnet50(10);
  const std::vector<std::string> want = pytorch_state_dict("resnet50-cifar10");
  EXPECT_EQ(want.size(), 320u);
  EXPECT_EQ(trainbench_state_dict(resnet), want);
}

// Every parameter and statistic is in exactly one tensor, at its place: nothing is left at its
// initial value on import, nothing is written twice.
TEST(TorchNames, CoverEveryValueOnce) {
  for (const Model& m : {build_mlp(1, 28, 28, {128}, 10), build_resnet50(10)}) {
    std::vector<int> params(size_t(m.param_count)), state(size_t(m.state_count));
    for (const TorchTensor& t : torch_state_dict(m)) {
      if (t.slot == TorchTensor::Slot::updates) continue;
      std::vector<int>& seen = t.slot == TorchTensor::Slot::params ? params : state;
      ASSERT_LE(t.offset + t.count(), int64_t(seen.size())) << t.name;
      for (int64_t i = 0; i < t.count(); ++i) seen[size_t(t.offset + i)]++;
    }
    EXPECT_EQ(std::count(params.begin(), params.end(), 1), m.param_count) << m.name;
    EXPECT_EQ(std::count(state.begin(), state.end(), 1), m.state_count) << m.name;
  }
}

// A checkpoint of the given workload with every value drawn (BN variances positive).
Checkpoint random_checkpoint(const std::string& workload, const Model& m) {
  Checkpoint c;
  c.workload = workload;
  c.param_count = m.param_count, c.state_count = m.state_count;
  c.updates = 1234;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0.01f, 2.f);
  for (auto* v : {&c.params, &c.state}) {
    v->resize(size_t(v == &c.params ? m.param_count : m.state_count));
    for (float& x : *v) x = u(rng);
  }
  return c;
}

TEST(TorchWeights, ExportReadsBackToTheBit) {
  testing::TempDir dir;
  for (const char* workload : {"fashion-mlp", "resnet50-cifar10"}) {
    SCOPED_TRACE(workload);
    const Model m = workload == std::string("fashion-mlp") ? build_mlp(1, 28, 28, {128}, 10)
                                                           : build_resnet50(10);
    const Checkpoint c = random_checkpoint(workload, m);
    EXPECT_EQ(checkpoint_model(c, "ck").param_count, m.param_count);
    const std::string path = dir / (std::string(workload) + ".safetensors");
    export_safetensors(c, m, path);
    SafeTensorsReader r(path);
    EXPECT_EQ(r.metadata().at("workload"), workload);
    EXPECT_EQ(r.metadata().at("format"), "pt");
    EXPECT_EQ(r.metadata().at("trainbench_version"), TRAINBENCH_VERSION);
    EXPECT_EQ(safetensors_workload(r, ""), workload);
    const Checkpoint back = read_torch_weights(r, m, workload);
    EXPECT_EQ(back.workload, workload);
    EXPECT_TRUE(back.params == c.params);
    EXPECT_TRUE(back.state == c.state);
    if (m.state_count) {
      int64_t tracked = 0;
      r.read(*r.find("layer4.2.bn3.num_batches_tracked"), &tracked);
      EXPECT_EQ(tracked, 1234);
    }
  }
}

// The classifier's width follows the checkpoint (an image-folder set of 20 classes).
TEST(TorchWeights, CheckpointModelTakesItsClasses) {
  Checkpoint c = random_checkpoint("resnet50-cifar10", build_resnet50(20));
  EXPECT_EQ(checkpoint_model(c, "ck").classes, 20);
  c.param_count += 1;
  EXPECT_TB_ERROR(checkpoint_model(c, "ck"), "checkpoint ck", "fit no resnet50-cifar10 model");
}

// Each way a file can differ from the model is refused in one line naming the file and tensor.
TEST(TorchWeights, RefusesWhatIsNotTheModel) {
  const Model m = build_mlp(1, 28, 28, {128}, 10);
  const Checkpoint c = random_checkpoint("fashion-mlp", m);
  std::vector<SafeTensorOut> base;
  for (const TorchTensor& t : torch_state_dict(m))
    base.push_back({t.name, StDtype::F32, t.shape, c.params.data() + t.offset});
  auto refused = [&](const std::vector<SafeTensorOut>& tensors,
                     std::map<std::string, std::string> metadata = {}) {
    const std::string bytes = safetensors_bytes(metadata, tensors);
    return error_of([&] {
      SafeTensorsReader r(std::string_view(bytes), "w.safetensors");
      read_torch_weights(r, m, safetensors_workload(r, "fashion-mlp"));
    });
  };
  auto with = [&](auto change) {
    std::vector<SafeTensorOut> t = base;
    change(t);
    return t;
  };
  EXPECT_EQ(refused(with([](auto& t) { t.erase(t.begin() + 2); })),
            "w.safetensors: tensor '3.weight' missing (1 of the model's 4 missing)");
  EXPECT_EQ(refused(with([&](auto& t) {
              t.push_back({"4.weight", StDtype::F32, {1}, c.params.data()});
            })),
            "w.safetensors: tensor '4.weight' is not in fashion-mlp's model (1 such tensor; 0 of "
            "the model's missing)");
  EXPECT_EQ(refused(with([](auto& t) {
              t[1].shape = {64, 2};
            })),
            "w.safetensors: tensor '1.bias' has shape [64, 2]; the model's is [128]");
  EXPECT_EQ(refused(with([](auto& t) {
              t[0].shape = {784, 128};
            })),
            "w.safetensors: tensor '1.weight' has shape [784, 128]; the model's is [128, 784]");
  EXPECT_EQ(refused(with([](auto& t) { t[3].dtype = StDtype::F16, t[3].shape = {20}; })),
            "w.safetensors: tensor '3.bias' is F16; the model's is F32");
  std::vector<float> bad(c.params.begin(), c.params.begin() + 10);
  bad[7] = NAN;
  EXPECT_EQ(refused(with([&](auto& t) { t[3].data = bad.data(); })),
            "w.safetensors: tensor '3.bias' holds nan at index 7 (not a finite number)");
  bad[7] = -INFINITY;
  EXPECT_EQ(refused(with([&](auto& t) { t[3].data = bad.data(); })),
            "w.safetensors: tensor '3.bias' holds -inf at index 7 (not a finite number)");
  EXPECT_EQ(refused(base, {{"workload", "resnet50-cifar10"}}),
            "w.safetensors: holds weights of resnet50-cifar10, not fashion-mlp");
  EXPECT_EQ(refused(base, {{"workload", "vgg"}}),
            "w.safetensors: its metadata names workload 'vgg', which this trainbench does not "
            "have");

  // The base file reads; without metadata only where the workload is given.
  const std::string bytes = safetensors_bytes({}, base);
  SafeTensorsReader r(std::string_view(bytes), "w.safetensors");
  EXPECT_EQ(read_torch_weights(r, m, safetensors_workload(r, "fashion-mlp")).params.size(),
            c.params.size());
  EXPECT_TB_ERROR(safetensors_workload(r, ""), "w.safetensors: its metadata names no workload",
                  "--workload");
}

// A batch norm's running variance is never negative: eval mode would take its square root.
TEST(TorchWeights, RefusesANegativeVariance) {
  ResNetSpec spec;
  spec.stem_width = 8;
  const int widths[4] = {4, 8, 16, 32}, blocks[4] = {1, 1, 1, 1};
  std::copy(widths, widths + 4, spec.widths), std::copy(blocks, blocks + 4, spec.blocks);
  const Model m = build_resnet(spec, 10, 3, 32, 32);
  Checkpoint c = random_checkpoint("resnet50-cifar10", m);
  c.state[8 + 3] = -0.5f;  // bn1 (8 channels): running_var[3]
  testing::TempDir dir;
  export_safetensors(c, m, dir / "w.safetensors");
  SafeTensorsReader r(dir / "w.safetensors");
  EXPECT_TB_ERROR(read_torch_weights(r, m, "resnet50-cifar10"),
                  "tensor 'bn1.running_var' holds -0.5 at index 3 (a negative variance)");
}

}  // namespace
}  // namespace tb
