// The command line as a user meets it: bad input is one line on stderr and a non-zero exit.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/cpu/cpu_context.h"
#include "train/checkpoint.h"

namespace {

struct Result {
  int status = -1;
  std::string out, err;
};

// Runs trainbench with `args`; `env` ("NAME=value ...") goes before it on the command line.
Result run(const std::string& args, const std::string& env = "") {
  const std::string err_file =
      (std::filesystem::temp_directory_path() / ("tb_cli_err_" + std::to_string(getpid())))
          .string();
  const std::string cmd = env + " " + TRAINBENCH_BINARY + " " + args + " 2>" + err_file;
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  size_t k;
  while ((k = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), k);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream e(err_file);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  std::filesystem::remove(err_file);
  return r;
}

int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// Runs `script` under sh; returns what it printed on stdout.
std::string shell(const std::string& script) {
  FILE* p = popen(script.c_str(), "r");
  std::string out;
  std::array<char, 256> buf;
  size_t k;
  while ((k = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), k);
  pclose(p);
  return out;
}

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The tests that train on the real Fashion-MNIST skip (saying why) where it is not installed.
#define SKIP_WITHOUT_FASHION_MNIST()                                                            \
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) \
  GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"

// A fresh folder for one test's files (removed by the test).
std::filesystem::path scratch_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / (name + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  return dir;
}

void expect_one_line_error(const Result& r, const std::string& mentions) {
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(mentions), std::string::npos) << r.err;
}

TEST(Cli, UnknownWorkload) {
  expect_one_line_error(run("run no-such-workload"), "no-such-workload");
}
TEST(Cli, BatchZero) {
  expect_one_line_error(run("run fashion-mlp --batch 0"), "--batch");
}
TEST(Cli, NegativeEpochs) {
  expect_one_line_error(run("run fashion-mlp --epochs -1"), "--epochs");
}
TEST(Cli, UnknownOption) {
  expect_one_line_error(run("run fashion-mlp --bogus 3"), "--bogus");
}
// More threads than CPUs: the run goes on (it is the user's call) but says what its times mean.
TEST(Cli, MoreThreadsThanCpusIsSaid) {
  SKIP_WITHOUT_FASHION_MNIST();
  const unsigned threads = std::thread::hardware_concurrency() + 1;
  const auto dir = scratch_dir("tb_cli_threads_");
  const Result r = run("run fashion-mlp --steps 2 --no-peak --quiet --threads " +
                       std::to_string(threads) + " --out " + (dir / "r.json").string());
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("warning: --threads " + std::to_string(threads) + " is more than the"),
            std::string::npos)
      << r.err;
  std::filesystem::remove_all(dir);
}

// A run that did not learn (a learning rate that diverges) keeps its record and exit status but
// says its accuracy is chance; a run that learnt says nothing of the kind.
TEST(Cli, ChanceAccuracyIsSaid) {
  SKIP_WITHOUT_FASHION_MNIST();
  const auto dir = scratch_dir("tb_cli_chance_");
  const std::string common = " --epochs 1 --no-peak --quiet --out " + (dir / "r.json").string();
  Result r = run("run fashion-mlp --optimizer sgd --lr 500" + common);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("is chance for 10 classes: the model did not learn"), std::string::npos)
      << r.err;
  r = run("run fashion-mlp" + common);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err.find("chance"), std::string::npos) << r.err;
  std::filesystem::remove_all(dir);
}

// CLI11's ranges let "nan" through (every comparison with NaN is false): refused by name.
TEST(Cli, NanIsNoNumber) {
  expect_one_line_error(run("run fashion-mlp --lr nan"), "--lr");
  expect_one_line_error(run("run fashion-mlp --optimizer sgd --momentum nan"), "--momentum");
  expect_one_line_error(run("run fashion-mlp --weight-decay nan"), "--weight-decay");
  expect_one_line_error(run("run fashion-mlp --checkpoint x --checkpoint-every nan"),
                        "--checkpoint-every");
}
TEST(Cli, BadPrecision) {
  expect_one_line_error(run("run fashion-mlp --precision fp8"), "--precision");
}
TEST(Cli, BadDevice) {
  expect_one_line_error(run("run fashion-mlp --device tpu"), "tpu");
}
// Options that apply to one device and precision refuse the others rather than do nothing.
TEST(Cli, NhwcOutsideCudaBf16) {
  expect_one_line_error(run("run fashion-mlp --nhwc --steps 1"), "--nhwc");
  expect_one_line_error(run("profile resnet50-cifar10 --nhwc --steps 1"), "--nhwc");
}
TEST(Cli, CudaSwitchesOutsideTheirPaths) {
  expect_one_line_error(run("run fashion-mlp --no-bn-slices --steps 1"), "--no-bn-slices");
  expect_one_line_error(run("profile resnet50-cifar10 --no-bf16-reuse --steps 1"),
                        "--no-bf16-reuse");  // fp32: nothing to reuse
}
TEST(Cli, FusedMlpOutsideCudaFp32) {
  expect_one_line_error(run("run fashion-mlp --fused-mlp --steps 1"), "--fused-mlp");
  expect_one_line_error(run("profile fashion-mlp --fused-mlp --steps 1"), "--fused-mlp");
}
TEST(Cli, NoFusedMlpOutsideCpuFp32) {
  expect_one_line_error(run("run fashion-mlp --no-fused-mlp --precision bf16 --steps 1"),
                        "--no-fused-mlp");
  expect_one_line_error(run("run fashion-mlp --no-fused-mlp --device cuda --steps 1"),
                        "--no-fused-mlp");
}
TEST(Cli, Fp32MapsOutsideCpuBf16) {
  expect_one_line_error(run("run fashion-mlp --fp32-maps --steps 1"), "--fp32-maps");
  expect_one_line_error(run("profile resnet50-cifar10 --fp32-maps --device cuda --precision bf16"),
                        "--fp32-maps");
}
TEST(Cli, UnreadableData) {
  expect_one_line_error(run("run fashion-mlp --data /nonexistent/fashion"), "/nonexistent/fashion");
}
TEST(Cli, CudaWithoutGpu) {
#ifdef TRAINBENCH_HAVE_CUDA
  if (tb::cuda_device_count() > 0) GTEST_SKIP() << "this machine has a GPU";
#endif
  expect_one_line_error(run("run fashion-mlp --device cuda"), "cuda");
}
TEST(Cli, HelpExitsZero) {
  Result r = run("run --help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("--epochs"), std::string::npos);
}

TEST(Cli, ShortRunWritesRecord) {
  SKIP_WITHOUT_FASHION_MNIST();
  const auto out = std::filesystem::temp_directory_path() / "tb_cli_record.json";
  Result r = run("run fashion-mlp --steps 40 --no-peak --quiet --deterministic --no-graphs --out " +
                 out.string());
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream in(out);
  nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["workload"], "fashion-mlp");
  EXPECT_EQ(j["deterministic"], true);
  EXPECT_EQ(j["step_graphs"], "off (the backend records no graphs)");  // the CPU records none
  EXPECT_EQ(j["activations"], "nhwc");       // the CPU's plan; one-channel images flatten alike
  EXPECT_TRUE(j["algorithms"].is_object());  // the MLP's dense layers choose nothing: empty
  EXPECT_EQ(j["steps"], 40);
  EXPECT_EQ(j["stopped_by_steps"], true);
  EXPECT_GT(j["throughput"]["train_images_per_s"].get<double>(), 0);
  // Started without mpirun: one rank, MPI untouched, no allreduce.
  EXPECT_EQ(j["ranks"]["world_size"], 1);
  EXPECT_EQ(j["ranks"]["engine"], "none");
  EXPECT_FALSE(j["ranks"].contains("allreduce"));
  std::filesystem::remove(out);
}

// --precision bf16 on the CPU trains where the CPU has bf16 instructions (and the record says
// bf16, with the bf16 peak), and is one line of refusal where it has not: here, or with oneDNN
// held to AVX-512 without them (ONEDNN_MAX_CPU_ISA, as on a Skylake server).
TEST(Cli, CpuBf16RunsWhereTheCpuHasIt) {
  SKIP_WITHOUT_FASHION_MNIST();
  const auto out = std::filesystem::temp_directory_path() / "tb_cli_bf16.json";
  const std::string args =
      "run fashion-mlp --precision bf16 --steps 40 --no-peak --quiet --out " + out.string();
  expect_one_line_error(run(args, "ONEDNN_MAX_CPU_ISA=AVX512_CORE"), "AVX512-BF16");
  EXPECT_FALSE(std::filesystem::exists(out));
  Result r = run(args);
  if (!tb::cpu::cpu_has_bf16_kernels()) {
    expect_one_line_error(r, "AVX512-BF16");
    return;
  }
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream in(out);
  nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["precision"], "bf16");
  EXPECT_NE(j["flops"]["peak_datasheet_source"].get<std::string>().find("BF16"), std::string::npos);
  std::filesystem::remove(out);
}

}  // namespace

namespace {

TEST(Cli, RepeatRecordsMedianAndSpread) {
  SKIP_WITHOUT_FASHION_MNIST();
  const auto out = std::filesystem::temp_directory_path() / "tb_cli_repeat.json";
  Result r = run("run fashion-mlp --steps 20 --repeat 3 --no-peak --quiet --out " + out.string());
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream in(out);
  nlohmann::json j = nlohmann::json::parse(in);
  const auto& tt = j["repeats"]["train_test_s"];
  ASSERT_EQ(tt["values"].size(), 3u);
  std::vector<double> v = tt["values"].get<std::vector<double>>();
  std::sort(v.begin(), v.end());
  EXPECT_DOUBLE_EQ(tt["median"].get<double>(), v[1]);
  EXPECT_DOUBLE_EQ(tt["min"].get<double>(), v[0]);
  EXPECT_NEAR(tt["spread"].get<double>(), (v[2] - v[0]) / v[1], 1e-12);
  // Same seed, fresh parameters each run: the same accuracy every time.
  const auto acc = j["repeats"]["test_accuracy"]["values"];
  EXPECT_EQ(acc[0], acc[1]);
  EXPECT_EQ(acc[1], acc[2]);
  std::filesystem::remove(out);
}

TEST(Cli, CheckpointOptionsRefuseWhatTheyCannotDo) {
  expect_one_line_error(run("run fashion-mlp --repeat 2 --checkpoint /tmp/x.tbck"), "--repeat");
  expect_one_line_error(run("run fashion-mlp --resume /nonexistent/run.tbck"), "cannot open");
  expect_one_line_error(run("run fashion-mlp --checkpoint-every 5"), "needs --checkpoint");
  // An existing file is not replaced by a run that does not go on from it.
  const auto dir = scratch_dir("tb_cli_ckexists_");
  const std::string ck = (dir / "run.tbck").string(), other = (dir / "other.tbck").string();
  std::ofstream(ck) << "hours of training";
  std::ofstream(other) << "another run";
  expect_one_line_error(run("run fashion-mlp --checkpoint " + ck), "add --resume " + ck);
  expect_one_line_error(run("run fashion-mlp --resume " + other + " --checkpoint " + ck),
                        "the file exists");
  EXPECT_EQ(file_text(ck), "hours of training");
  std::filesystem::remove_all(dir);
  expect_one_line_error(run("run fashion-mlp --checkpoint /tmp/x.tbck --checkpoint-every 0"),
                        "--checkpoint-every");
}

// Two epochs as one epoch, stopped, then resumed for the second: the same test accuracy and
// loss as two epochs straight (deterministic), and the record says what was resumed.
TEST(Cli, ResumedRunMatchesTheStraightOne) {
  SKIP_WITHOUT_FASHION_MNIST();
  const auto dir = scratch_dir("tb_cli_ck_");
  const std::string ck = (dir / "run.tbck").string(),
                    common = " --no-peak --quiet --deterministic --out ";
  ASSERT_EQ(
      run("run fashion-mlp --epochs 1 --checkpoint " + ck + common + (dir / "a.json").string())
          .status,
      0);
  Result r = run("run fashion-mlp --epochs 2 --resume " + ck + " --checkpoint " + ck + common +
                 (dir / "b.json").string());
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(run("run fashion-mlp --epochs 2" + common + (dir / "c.json").string()).status, 0);
  auto load = [&](const char* name) { return nlohmann::json::parse(std::ifstream(dir / name)); };
  const nlohmann::json a = load("a.json"), b = load("b.json"), c = load("c.json");
  EXPECT_EQ(b["resumed_epochs"], 1);
  EXPECT_EQ(b["resumed_from"]["path"], ck);
  EXPECT_EQ(b["resumed_from"]["written_by"], "cpu-onednn");
  EXPECT_EQ(b["checkpoint"]["written"], 1);
  EXPECT_EQ(a["checkpoint"]["written"], 1);
  EXPECT_EQ(b["epochs_completed"], 2);
  EXPECT_EQ(b["times_s"]["train_before_resume"], a["times_s"]["epochs"][0]);
  EXPECT_EQ(b["steps"], c["steps"].get<int>() / 2);  // this run's own steps
  EXPECT_EQ(b["accuracy"]["test"], c["accuracy"]["test"]);
  EXPECT_EQ(b["loss"]["epochs"], c["loss"]["epochs"]);
  EXPECT_NE(r.out.find("resumed after epoch 1"), std::string::npos) << r.out;
  // Asking for no more epochs than it holds: one line, before any data loads.
  expect_one_line_error(run("run fashion-mlp --epochs 2 --resume " + ck), "stops after epoch 2");

  // Cut inside epoch 2 (1875 steps an epoch) and resumed there: the same run again.
  const std::string cut = (dir / "cut.tbck").string();
  ASSERT_EQ(run("run fashion-mlp --epochs 2 --steps 2500 --checkpoint " + cut + common +
                (dir / "d.json").string())
                .status,
            0);
  r = run("run fashion-mlp --epochs 2 --resume " + cut + common + (dir / "e.json").string());
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json d = load("d.json"), e = load("e.json");
  EXPECT_EQ(d["checkpoint"]["written"], 2);
  EXPECT_EQ(e["resumed_epochs"], 1);
  EXPECT_EQ(e["resumed_steps"], 625);
  EXPECT_EQ(e["resumed_from"]["steps_into_epoch"], 625);
  EXPECT_EQ(e["steps"], 1250);
  EXPECT_EQ(e["accuracy"]["test"], c["accuracy"]["test"]);
  EXPECT_EQ(e["loss"]["epochs"], c["loss"]["epochs"]);
  EXPECT_NE(r.out.find("resumed at step 625 of epoch 2"), std::string::npos) << r.out;
  std::filesystem::remove_all(dir);
}

// `evaluate` tests a checkpoint's model as the run that wrote it did: the same accuracy and loss
// on the same backend and batch; within rounding at another batch, on the plain-loop reference
// and in bf16; on the training set where asked. Bad input is one line.
TEST(Cli, EvaluateTestsACheckpointAsItsRunDid) {
  SKIP_WITHOUT_FASHION_MNIST();
  const auto dir = scratch_dir("tb_cli_eval_");
  const std::string ck = (dir / "run.tbck").string(), e_json = (dir / "e.json").string();
  ASSERT_EQ(run("run fashion-mlp --epochs 1 --deterministic --no-peak --quiet --checkpoint " + ck +
                " --out " + (dir / "a.json").string())
                .status,
            0);
  const nlohmann::json a = nlohmann::json::parse(std::ifstream(dir / "a.json"));
  const double run_accuracy = a["accuracy"]["test"], run_loss = a["loss"]["test"];
  auto evaluate = [&](const std::string& args) {
    std::filesystem::remove(e_json);
    const Result r = run("evaluate " + ck + " " + args + " --out " + e_json);
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("after epoch 1, trained in fp32 on cpu-onednn"), std::string::npos)
        << r.out;
    return r.status == 0 ? nlohmann::json::parse(std::ifstream(e_json)) : nlohmann::json();
  };
  nlohmann::json e = evaluate("--deterministic");
  ASSERT_FALSE(e.is_null());
  EXPECT_EQ(e["kind"], "evaluation");
  EXPECT_EQ(e["split"], "test");
  EXPECT_EQ(e["images"], 10000);
  EXPECT_EQ(e["batch"], 32);
  EXPECT_EQ(e["precision"], "fp32");
  EXPECT_EQ(e["checkpoint"]["epochs_done"], 1);
  EXPECT_EQ(e["accuracy"].get<double>(), run_accuracy);
  EXPECT_EQ(e["loss"].get<double>(), run_loss);
  // Other batches and the reference sum in other orders: a near tie may flip (3 of 10,000).
  for (const char* args : {"--batch 1000", "--reference"}) {
    e = evaluate(args);
    EXPECT_NEAR(e["accuracy"].get<double>(), run_accuracy, 3e-4) << args;
    EXPECT_NEAR(e["loss"].get<double>(), run_loss, 1e-4 * run_loss) << args;
  }
  if (tb::cpu::cpu_has_bf16_kernels()) {
    e = evaluate("--precision bf16");
    EXPECT_EQ(e["precision"], "bf16");
    EXPECT_NEAR(e["accuracy"].get<double>(), run_accuracy, 5e-3);
    EXPECT_NE(e["loss"].get<double>(), run_loss);  // rounded operands: not the fp32 arithmetic
    EXPECT_NEAR(e["loss"].get<double>(), run_loss, 2e-2 * run_loss);
  }
  // The training set, in eval mode, after one epoch: a little above the test set.
  e = evaluate("--split train");
  EXPECT_EQ(e["images"], 60000);
  EXPECT_GT(e["accuracy"].get<double>(), run_accuracy - 0.02);
  EXPECT_LT(e["accuracy"].get<double>(), 0.95);

  expect_one_line_error(run("evaluate " + (dir / "none.tbck").string()), "cannot open");
  std::ofstream(dir / "junk.tbck") << "not a checkpoint";
  expect_one_line_error(run("evaluate " + (dir / "junk.tbck").string()),
                        "not a trainbench checkpoint");
  expect_one_line_error(run("evaluate " + ck + " --split validation"), "--split");
  expect_one_line_error(run("evaluate " + ck + " --data " + (dir / "nothing").string()),
                        (dir / "nothing").string());
#ifdef TRAINBENCH_HAVE_CUDA
  const bool gpu = tb::cuda_device_count() > 0;
#else
  const bool gpu = false;
#endif
  if (!gpu) expect_one_line_error(run("evaluate " + ck + " --device cuda"), "cuda");
  // A run asked to go on from a finished checkpoint points at evaluate.
  expect_one_line_error(run("run fashion-mlp --epochs 1 --resume " + ck),
                        "trainbench evaluate " + ck);
  // compare takes run records, and says what an evaluation record is.
  expect_one_line_error(run("compare " + e_json), "the record of `trainbench evaluate`");
  std::filesystem::remove_all(dir);
}

// A record or checkpoint path that cannot be written (here: under a plain file) loses nothing:
// the checkpoint failure is a warning and a non-zero exit after the record is written; the
// record goes to the temp folder, and the run says where.
TEST(Cli, UnwritablePathsLoseNoResult) {
  SKIP_WITHOUT_FASHION_MNIST();
  const auto dir = scratch_dir("tb_cli_unwritable_");
  const std::string blocker = (dir / "file").string();
  std::ofstream(blocker) << "not a folder";
  const std::string out = (dir / "r.json").string();
  Result r = run("run fashion-mlp --epochs 1 --no-peak --quiet --out " + out + " --checkpoint " +
                 blocker + "/run.tbck");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("warning: checkpoint after epoch 1 not written"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("1 of 1 checkpoints could not be written"), std::string::npos) << r.err;
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(out));
  EXPECT_EQ(j["checkpoint"]["written"], 0);
  EXPECT_EQ(j["checkpoint"]["failed"], 1);

  const std::string name = "tb_cli_fallback_" + std::to_string(getpid()) + ".json";
  const auto fallback = std::filesystem::temp_directory_path() / name;
  r = run("run fashion-mlp --steps 20 --no-peak --quiet --out " + blocker + "/" + name);
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("the record went to " + fallback.string()), std::string::npos) << r.err;
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(fallback))["steps"], 20);
  std::filesystem::remove(fallback);
  std::filesystem::remove_all(dir);
}

// Ctrl-C or SIGTERM during a long run (SIGTERM here: a background job ignores SIGINT):
// training stops after the step under way, the test pass runs, the record is written
// (interrupted) and the exit status is 130.
TEST(Cli, InterruptedRunKeepsItsRecord) {
  SKIP_WITHOUT_FASHION_MNIST();
  const auto dir = scratch_dir("tb_cli_int_");
  const std::string log = (dir / "log").string(), out = (dir / "r.json").string();
  // The signal goes once the first epoch has ended (its line is in the log), well before the
  // 100th: the wait allows for slow machines and sanitizers.
  const std::string ck = (dir / "run.tbck").string();
  const std::string status =
      shell(std::string(TRAINBENCH_BINARY) + " run fashion-mlp --epochs 100 --steps 40000 " +
            "--no-peak --checkpoint " + ck + " --out " + out + " >" + log +
            " 2>&1 & p=$!; for i in $(seq 1200); do " + "grep -q 'epoch 1/100' " + log +
            " && break; sleep 0.1; done; kill -TERM $p; " + "wait $p; echo $?");
  EXPECT_EQ(status, "130\n") << file_text(log);
  std::ifstream in(out);
  ASSERT_TRUE(in.good()) << "no record after the interrupt; the run printed:\n" << file_text(log);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["interrupted"], true);
  EXPECT_GE(j["steps"].get<int64_t>(), 1875);   // at least the first epoch
  EXPECT_LT(j["steps"].get<int64_t>(), 40000);  // --steps bounds it should the signal be lost
  EXPECT_GT(j["accuracy"]["test"].get<double>(), 0.6);  // tested as it stood: it had learnt
  // The checkpoint stands where training stopped, to resume from, and the run says so.
  const int64_t steps = j["steps"].get<int64_t>();
  const tb::Checkpoint c = tb::read_checkpoint(ck);
  EXPECT_EQ(c.epochs_done, steps / 1875);
  EXPECT_EQ(c.epoch_so_far.steps, steps % 1875);
  EXPECT_EQ(c.updates, steps);
  EXPECT_NE(file_text(log).find("; the checkpoint stands " + tb::checkpoint_place(c) +
                                ": add --resume " + ck + " to go on"),
            std::string::npos)
      << file_text(log);
  std::filesystem::remove_all(dir);
}

// Before training starts (measuring the peak, loading) there is nothing to keep: SIGTERM ends the
// process as its default action does (status 143 from the shell). The signal goes once the run
// blocks SIGTERM for its watcher thread (/proc's SigBlk has bit 15), in the second-long peak
// measurement that follows. Were it swallowed, the run would train its 3000 steps and exit 0.
TEST(Cli, SignalBeforeTrainingEndsTheProcess) {
  SKIP_WITHOUT_FASHION_MNIST();
  const auto dir = scratch_dir("tb_cli_sigload_");
  const std::string out = (dir / "r.json").string();
  const std::string status = shell(
      std::string(TRAINBENCH_BINARY) + " run fashion-mlp --steps 3000 --quiet --out " + out +
      " >/dev/null 2>&1 & p=$!; for i in $(seq 600); do m=$(awk '/^SigBlk/{print $2}' " +
      "/proc/$p/status 2>/dev/null); [ $(( 0x${m:-0} & 0x4000 )) -ne 0 ] && break; sleep 0.01; " +
      "done; " + "kill -TERM $p; wait $p; echo $?");
  EXPECT_EQ(status, "143\n");
  EXPECT_FALSE(std::filesystem::exists(out));
  std::filesystem::remove_all(dir);
}

// `suite --quick`: fashion-mlp for a few steps, its whole run projected. Where CIFAR-10 is not
// where it looks (a folder without data/, TRAINBENCH_DATA unset) it says so in one line and
// runs the rest; the report holds the seed article's rows and the projection.
TEST(Cli, SuiteWithoutCifar) {
  SKIP_WITHOUT_FASHION_MNIST();
  const auto dir = scratch_dir("tb_cli_suite_");
  const std::string out = (dir / "out").string();
  const Result r = run("suite --quick --steps 20 --test-batches 2 --device cpu --out " + out,
                       "cd " + dir.string() + " && env -u TRAINBENCH_DATA");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("resnet50-cifar10: skipped, no CIFAR-10 at data/cifar10 (--data-cifar"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("[1/1] fashion-mlp cpu fp32, 20 steps, 2 test batches: train+test "),
            std::string::npos)
      << r.out;
  const nlohmann::json rec = nlohmann::json::parse(file_text(out + "/fashion-mlp-cpu-fp32.json"));
  EXPECT_EQ(rec["steps"], 20);
  EXPECT_EQ(rec["accuracy"]["test_images"], 64);
  EXPECT_EQ(rec["projected"]["steps"], 18750);
  EXPECT_EQ(rec["loss"]["samples"].size(), 20u);  // a sample a step in a run this short
  const std::string html = file_text(out + "/report.html");
  for (const char* s : {"trainbench suite", " projected", "7.78", "derived"})
    EXPECT_NE(html.find(s), std::string::npos) << s;

  expect_one_line_error(run("suite --data-cifar " + (dir / "none").string()), "--data-cifar");
  std::filesystem::remove_all(dir);
}

}  // namespace

namespace {

// A run that diverges stops at the step whose loss is not finite, says so in one line and exits
// non-zero; its record holds what ran, marked diverged; the last good checkpoint stays as it was.
// The divergence is made by a checkpoint whose last bias (the classifier's) is NaN, resumed: every
// later step's loss is NaN, so the first step after the checkpoint's 10 is the one named. (A NaN
// weight before a ReLU would not do: max(NaN, 0) is 0 in oneDNN, and the loss stays finite.)
TEST(Cli, DivergedRunStopsAndKeepsTheLastCheckpoint) {
  SKIP_WITHOUT_FASHION_MNIST();
  const auto dir = scratch_dir("tb_cli_div_");
  const std::string ck = (dir / "run.tbck").string(), out = (dir / "run.json").string();
  ASSERT_EQ(run("run fashion-mlp --steps 10 --no-peak --quiet --checkpoint " + ck + " --out " +
                (dir / "first.json").string())
                .status,
            0);
  tb::Checkpoint c = tb::read_checkpoint(ck);
  c.params.back() = std::nanf("");  // dense2's last bias
  tb::write_checkpoint(ck, c);
  const std::string before = file_text(ck);

  Result r = run("run fashion-mlp --steps 40 --no-peak --quiet --resume " + ck + " --checkpoint " +
                 ck + " --out " + out);
  EXPECT_EQ(r.status, 3);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("diverged: the loss was not finite at step 11 (epoch 1)"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("first non-finite values in dense2"), std::string::npos) << r.err;
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(out));
  EXPECT_EQ(j["diverged"]["step"], 11);
  EXPECT_EQ(j["diverged"]["step_exact"], true);
  EXPECT_EQ(j["diverged"]["layer"], "dense2");
  EXPECT_EQ(j["steps"], 1);
  EXPECT_TRUE(j["accuracy"]["test"].is_null());
  EXPECT_EQ(j["checkpoint"]["written"], 0);
  EXPECT_EQ(file_text(ck), before) << "the last good checkpoint was replaced";
  std::filesystem::remove_all(dir);
}

// ---- Several ranks (mpiexec -np 2), where the build has MPI and mpiexec is there ----

#ifdef TRAINBENCH_MPIEXEC
#define SKIP_WITHOUT_MPIEXEC() static_assert(true)
#else
#define SKIP_WITHOUT_MPIEXEC() GTEST_SKIP() << "built without MPI or no mpiexec"
#define TRAINBENCH_MPIEXEC ""
#endif

// The lines trainbench itself printed on stderr (mpiexec adds its own banners).
std::vector<std::string> trainbench_lines(const std::string& err) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < err.size()) {
    const size_t end = std::min(err.find('\n', at), err.size());
    if (err.compare(at, 11, "trainbench:") == 0) out.push_back(err.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

TEST(CliRanks, MismatchedSettingsAreRefusedInOneLine) {
  SKIP_WITHOUT_MPIEXEC();
  SKIP_WITHOUT_FASHION_MNIST();
  const auto dir = scratch_dir("tb_ranks_mismatch_");
  const std::string run = std::string(TRAINBENCH_BINARY) + " run fashion-mlp --steps 5 --quiet " +
                          "--no-peak --out " + (dir / "r.json").string();
  const std::string err = (dir / "err").string();
  const std::string status = shell(std::string(TRAINBENCH_MPIEXEC) + " -np 1 " + run + " : -np 1 " +
                                   run + " --batch 64 >/dev/null 2>" + err + "; echo $?");
  EXPECT_NE(status, "0\n");
  const std::vector<std::string> said = trainbench_lines(file_text(err));
  ASSERT_EQ(said.size(), 1u) << file_text(err);
  EXPECT_NE(said[0].find("rank 1 of 2 was started with batch 64 where rank 0 has 32"),
            std::string::npos)
      << said[0];
  EXPECT_FALSE(std::filesystem::exists(dir / "r.json"));
  std::filesystem::remove_all(dir);
}

// A rank killed mid-training ends the job within the bound, and the message names it (Open MPI's
// runtime notices the death and ends the other ranks; the test measures how long that takes).
TEST(CliRanks, KilledRankEndsTheOthers) {
  SKIP_WITHOUT_MPIEXEC();
  SKIP_WITHOUT_FASHION_MNIST();
  const auto dir = scratch_dir("tb_ranks_kill_");
  const std::string out = (dir / "r.json").string(), log = (dir / "log").string();
  const std::string status =
      shell(std::string(TRAINBENCH_MPIEXEC) + " -np 2 " + TRAINBENCH_BINARY +
            " run fashion-mlp --epochs 100 --no-peak --out " + out + " >" + log + " 2>&1 & m=$!; " +
            // rank 1 once it trains (rank 0 has printed its header: training starts)
            "for i in $(seq 600); do grep -q 'fashion-mlp on cpu' " + log +
            " && break; sleep 0.1; " + "done; sleep 2; " + "for p in $(pgrep -f '" + out +
            "'); do grep -qz '^OMPI_COMM_WORLD_RANK=1$' " +
            "/proc/$p/environ 2>/dev/null && kill -KILL $p; done; t0=$(date +%s); wait $m; " +
            "echo $? $(( $(date +%s) - t0 ))");
  int rc = -1, seconds = -1;
  ASSERT_EQ(std::sscanf(status.c_str(), "%d %d", &rc, &seconds), 2) << status;
  EXPECT_NE(rc, 0) << file_text(log);
  EXPECT_LE(seconds, 60);
  EXPECT_NE(file_text(log).find("rank 1"), std::string::npos) << file_text(log);
  EXPECT_FALSE(std::filesystem::exists(out));
  std::filesystem::remove_all(dir);
}

// Ctrl-C on mpiexec: every rank stops at the same step (they agree before each), rank 0 tests the
// model and writes the record.
TEST(CliRanks, InterruptWritesTheRecord) {
  SKIP_WITHOUT_MPIEXEC();
  SKIP_WITHOUT_FASHION_MNIST();
  const auto dir = scratch_dir("tb_ranks_int_");
  const std::string out = (dir / "r.json").string(), log = (dir / "log").string();
  shell(std::string(TRAINBENCH_MPIEXEC) + " -np 2 " + TRAINBENCH_BINARY +
        " run fashion-mlp --epochs 100 --steps 40000 --no-peak --out " + out + " >" + log +
        " 2>&1 & m=$!; for i in $(seq 600); do grep -q 'fashion-mlp on cpu' " + log +
        " && break; sleep 0.1; done; sleep 2; kill -INT $m; wait $m");
  std::ifstream in(out);
  ASSERT_TRUE(in.good()) << "no record after the interrupt; the run printed:\n" << file_text(log);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["interrupted"], true);
  EXPECT_GT(j["steps"].get<int64_t>(), 0);
  EXPECT_LT(j["steps"].get<int64_t>(), 40000);
  EXPECT_EQ(j["ranks"]["world_size"], 2);
  EXPECT_EQ(j["ranks"]["batch_per_rank"], 16);
  EXPECT_GT(j["ranks"]["allreduce"]["ms_per_step"].get<double>(), 0);
  EXPECT_EQ(j["ranks"]["allreduce"]["gradient_bytes_per_step"], 101770 * 4);
  std::filesystem::remove_all(dir);
}

}  // namespace
