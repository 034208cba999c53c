// `export`, `evaluate FILE.safetensors` and `run --init` as a user meets them, on a small
// Fashion-MNIST-shaped data set made here: the exported weights test as the checkpoint did, a
// run starts from them, and every bad file or combination is one line on stderr.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../data/data_test_util.h"
#include "train/safetensors.h"

namespace {

using tb::testing::TempDir;
using tb::testing::write_fashion_like;

struct Result {
  int status = -1;
  std::string out, err;
};

Result run(const std::string& args) {
  TempDir dir;
  const std::string cmd = std::string(TRAINBENCH_BINARY) + " " + args + " 2>" + (dir / "err");
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  size_t k;
  while ((k = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), k);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream e(dir / "err");
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  return r;
}

void expect_one_line_error(const Result& r, const std::string& mentions) {
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(mentions), std::string::npos) << r.err;
}

nlohmann::json json_file(const std::string& path) {
  return nlohmann::json::parse(std::ifstream(path));
}

TEST(ExportCli, WeightsTestAsTheCheckpointAndStartARun) {
  TempDir dir;
  const std::string data = dir / "data";
  const std::vector<uint8_t> labels = write_fashion_like(data, 512, 200);
  const std::string common = " --data " + data + " --deterministic ";
  const std::string ck = dir / "run.tbck", w = dir / "w.safetensors";
  ASSERT_EQ(run("run fashion-mlp --epochs 2 --no-peak --quiet --checkpoint " + ck + common +
                "--out " + (dir / "run.json"))
                .status,
            0);
  Result r = run("export " + ck + " --out " + w);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("fashion-mlp after epoch 2 (101770 parameters, 32 updates)"),
            std::string::npos)
      << r.out;

  // The same model, the same arithmetic: the same figures to the bit.
  ASSERT_EQ(run("evaluate " + ck + common + "--out " + (dir / "ck.json")).status, 0);
  r = run("evaluate " + w + common + "--logits " + (dir / "logits") + " --out " + (dir / "w.json"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("fashion-mlp weights (safetensors, 4 tensors)"), std::string::npos) << r.out;
  const nlohmann::json from_ck = json_file(dir / "ck.json"), from_w = json_file(dir / "w.json");
  EXPECT_EQ(from_w["accuracy"], from_ck["accuracy"]);
  EXPECT_EQ(from_w["loss"], from_ck["loss"]);
  EXPECT_GT(from_w["accuracy"].get<double>(), 0.5);  // it learnt: the weights are not the seed's
  EXPECT_EQ(from_w["checkpoint"]["path"], w);

  // The logits: every test image's, in order; their argmax is evaluate's accuracy.
  std::ifstream in(dir / "logits", std::ios::binary);
  std::vector<float> logits(200 * 10 + 1);
  in.read(reinterpret_cast<char*>(logits.data()), std::streamsize(logits.size() * 4));
  ASSERT_EQ(in.gcount(), 200 * 10 * 4);
  int correct = 0;
  for (int i = 0; i < 200; ++i)
    correct +=
        std::max_element(&logits[i * 10], &logits[i * 10 + 10]) - &logits[i * 10] == labels[i];
  EXPECT_NEAR(from_w["accuracy"].get<double>(), correct / 200.0, 1e-6);

  // A run from the weights: after one step at lr 1e-12 its model tests as they do.
  r = run("run fashion-mlp --init " + w +
          " --steps 1 --optimizer sgd --lr 1e-12 --no-peak --quiet" + common + "--out " +
          (dir / "init.json"));
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json init = json_file(dir / "init.json");
  EXPECT_EQ(init["init"]["path"], w);
  EXPECT_EQ(init["init"]["metadata"]["workload"], "fashion-mlp");
  EXPECT_EQ(init["accuracy"]["test"], from_w["accuracy"]);
  EXPECT_NEAR(init["loss"]["test"].get<double>(), from_w["loss"].get<double>(),
              1e-6 * from_w["loss"].get<double>());

  // Bad files and combinations, each one line naming the file.
  expect_one_line_error(run("run fashion-mlp --init " + ck + common), "not a .safetensors file");
  expect_one_line_error(run("run fashion-mlp --init " + w + " --resume " + ck + common),
                        "--init and --resume");
  expect_one_line_error(run("run resnet50-cifar10 --init " + w),
                        w + ": holds weights of fashion-mlp, not resnet50-cifar10");
  expect_one_line_error(run("evaluate " + w + " --workload resnet50-cifar10"),
                        "holds weights of fashion-mlp");
  expect_one_line_error(run("evaluate " + ck + " --workload resnet50-cifar10"),
                        "is of workload fashion-mlp");
  expect_one_line_error(run("evaluate " + (dir / "none.safetensors")), "not found");
  expect_one_line_error(run("export " + (dir / "none.tbck") + " --out " + (dir / "x.safetensors")),
                        "cannot open");
  expect_one_line_error(run("export " + ck), "--out");
  std::filesystem::copy_file(w, dir / "cut.safetensors");
  std::filesystem::resize_file(dir / "cut.safetensors", std::filesystem::file_size(w) - 4);
  expect_one_line_error(run("evaluate " + (dir / "cut.safetensors") + common),
                        "cut.safetensors: truncated ('3.bias' ends at byte");
  // Without metadata, the workload comes from --workload.
  {
    std::vector<float> zeros(128 * 784);
    tb::write_safetensors(dir / "bare.safetensors", {},
                          {{"1.weight", tb::StDtype::F32, {128, 784}, zeros.data()},
                           {"1.bias", tb::StDtype::F32, {128}, zeros.data()},
                           {"3.weight", tb::StDtype::F32, {10, 128}, zeros.data()},
                           {"3.bias", tb::StDtype::F32, {10}, zeros.data()}});
  }
  expect_one_line_error(run("evaluate " + (dir / "bare.safetensors") + common),
                        "its metadata names no workload");
  r = run("evaluate " + (dir / "bare.safetensors") + " --workload fashion-mlp" + common);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("loss 2.3026"), std::string::npos) << r.out;  // all-zero logits: ln 10
}

}  // namespace
