// Faults a long run meets, forced: a kill -9 while a checkpoint or the record is being written,
// a file-size limit (as a full disk) while writing either, and a kill -9 inside an epoch of a
// deterministic run that is then resumed. Nothing written before is lost, the measurement is
// kept or printed, and the resumed run ends with the uninterrupted run's weights to the bit.
// The kills come from the engine's test hooks (TRAINBENCH_TEST_KILL_IN_WRITE,
// TRAINBENCH_TEST_KILL_AFTER_STEP); the data is a small Fashion-MNIST-shaped set made here.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../data/data_test_util.h"
#include "train/checkpoint.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using tb::testing::TempDir;

struct Result {
  int status = -1;  // the exit status; -1 where a signal ended it
  int signal = 0;   // the signal that ended it, 0 for none
  std::string out, err;
};

// Runs trainbench with `args` (split at spaces), `env` added to its environment and, with
// fsize_limit > 0, RLIMIT_FSIZE set to it (SIGXFSZ left as is: the engine must cope). Output
// comes through pipes, which the limit does not touch.
Result run(const std::string& args, const std::vector<std::string>& env = {},
           rlim_t fsize_limit = 0) {
  std::vector<std::string> words{TRAINBENCH_BINARY};
  std::istringstream split(args);
  for (std::string w; split >> w;) words.push_back(w);
  std::vector<char*> argv, envp;
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  std::vector<std::string> vars(env);
  for (char** e = environ; *e; ++e) vars.emplace_back(*e);  // the first of a name wins
  for (std::string& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);

  int out_pipe[2], err_pipe[2];
  if (pipe(out_pipe) != 0 || pipe(err_pipe) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    if (fsize_limit > 0) {
      const rlimit lim{fsize_limit, fsize_limit};
      setrlimit(RLIMIT_FSIZE, &lim);
    }
    dup2(out_pipe[1], 1), dup2(err_pipe[1], 2);
    close(out_pipe[0]), close(err_pipe[0]), close(out_pipe[1]), close(err_pipe[1]);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  close(out_pipe[1]), close(err_pipe[1]);
  Result r;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* into[2] = {&r.out, &r.err};
  for (int open = 2; open > 0;) {
    if (poll(fds, 2, -1) < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !fds[i].revents) continue;
      char buf[4096];
      const ssize_t k = read(fds[i].fd, buf, sizeof(buf));
      if (k > 0) {
        into[i]->append(buf, size_t(k));
      } else {
        close(fds[i].fd), fds[i].fd = -1, open--;
      }
    }
  }
  int st = 0;
  waitpid(pid, &st, 0);
  if (WIFEXITED(st)) r.status = WEXITSTATUS(st);
  if (WIFSIGNALED(st)) r.signal = WTERMSIG(st);
  return r;
}

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

nlohmann::json json_file(const std::string& path) {
  return nlohmann::json::parse(std::ifstream(path));
}

// The files beside `path` that its atomic writes leave while under way: "<name>.tmp.<pid>".
std::vector<fs::path> temps_of(const std::string& path) {
  std::vector<fs::path> found;
  const std::string prefix = fs::path(path).filename().string() + ".tmp.";
  for (const fs::directory_entry& e : fs::directory_iterator(fs::path(path).parent_path()))
    if (e.path().filename().string().rfind(prefix, 0) == 0) found.push_back(e.path());
  return found;
}

// The lines of stderr that say "error:" (warnings may come before them).
std::vector<std::string> error_lines(const std::string& err) {
  std::vector<std::string> found;
  std::istringstream in(err);
  for (std::string line; std::getline(in, line);)
    if (line.find("error:") != std::string::npos) found.push_back(line);
  return found;
}

// A Fashion-MNIST-shaped set of 512 training images (16 steps an epoch at batch 32) and 200
// test images: a run of a few epochs takes a fraction of a second. Returns the runs' options.
std::string make_data(const TempDir& dir) {
  tb::testing::write_fashion_like(dir / "data", 512, 200);
  return " --data " + (dir / "data") + " --deterministic --no-peak --quiet ";
}

// A kill -9 with half of the next checkpoint written leaves the previous one whole: it tests as
// before, and the next run resumes from it and clears the dead writer's temp file. The same for
// a record being replaced.
TEST(Faults, KillWhileWritingKeepsThePreviousFile) {
  TempDir dir;
  const std::string common = make_data(dir);
  const std::string ck = dir / "run.tbck";
  Result r =
      run("run fashion-mlp --epochs 1 --checkpoint " + ck + common + "--out " + (dir / "a.json"));
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string before = bytes_of(ck);
  const nlohmann::json a = json_file(dir / "a.json");

  r = run("run fashion-mlp --epochs 2 --resume " + ck + " --checkpoint " + ck + common + "--out " +
              (dir / "b.json"),
          {"TRAINBENCH_TEST_KILL_IN_WRITE=run.tbck"});
  ASSERT_EQ(r.signal, SIGKILL) << "status " << r.status << ": " << r.err;
  EXPECT_EQ(bytes_of(ck), before) << "the previous checkpoint was touched";
  const std::vector<fs::path> stray = temps_of(ck);
  ASSERT_EQ(stray.size(), 1u) << "the kill did not come in the middle of the write";
  EXPECT_LT(fs::file_size(stray[0]), before.size() * 6 / 10);  // half of one as large
  EXPECT_FALSE(fs::exists(dir / "b.json"));

  // It tests as the run that wrote it did.
  r = run("evaluate " + ck + " --data " + (dir / "data") + " --deterministic --out " +
          (dir / "e.json"));
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json e = json_file(dir / "e.json");
  EXPECT_EQ(e["checkpoint"]["epochs_done"], 1);
  EXPECT_EQ(e["accuracy"], a["accuracy"]["test"]);
  EXPECT_EQ(e["loss"], a["loss"]["test"]);

  // The next run goes on from it, and the temp file is gone.
  r = run("run fashion-mlp --epochs 2 --resume " + ck + " --checkpoint " + ck + common + "--out " +
          (dir / "c.json"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(json_file(dir / "c.json")["epochs_completed"], 2);
  EXPECT_EQ(tb::read_checkpoint(ck).epochs_done, 2);
  EXPECT_TRUE(temps_of(ck).empty());

  // A record being replaced: the previous one stays.
  const std::string record = dir / "a.json", previous = bytes_of(record);
  r = run("run fashion-mlp --steps 4" + common + "--out " + record,
          {"TRAINBENCH_TEST_KILL_IN_WRITE=a.json"});
  ASSERT_EQ(r.signal, SIGKILL) << "status " << r.status << ": " << r.err;
  EXPECT_EQ(bytes_of(record), previous);
}

// A file-size limit on the record (as a full disk would): the previous record stays byte for
// byte, the summary with the run's figures is still printed, and stderr is one error line
// naming the file. The temp folder's fallback fails too (the limit is the process's): nothing
// half-written is left in either place. SIGXFSZ is not ignored here: the engine must not die
// of it.
TEST(Faults, FileSizeLimitOnTheRecordKeepsTheFigures) {
  TempDir dir;
  const std::string common = make_data(dir);
  const std::string name = "tb_faults_" + std::to_string(getpid()) + ".json";
  const std::string out = dir / name;
  ASSERT_EQ(run("run fashion-mlp --steps 4" + common + "--out " + out).status, 0);
  const std::string previous = bytes_of(out);
  ASSERT_GT(previous.size(), 4096u);

  const Result r = run("run fashion-mlp --steps 20" + common + "--out " + out, {}, 4096);
  EXPECT_EQ(r.signal, 0) << "a file-size limit killed the run";
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("trainbench: error: " + out + ": write failed (File too large)"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("the record is lost, the summary above holds its figures"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.out.find("throughput "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("test accuracy "), std::string::npos) << r.out;
  EXPECT_EQ(bytes_of(out), previous);
  EXPECT_TRUE(temps_of(out).empty());
  EXPECT_FALSE(fs::exists(fs::temp_directory_path() / name));
}

// A file-size limit on the checkpoint (the record fits under it): the previous checkpoint stays
// byte for byte, the record and summary are written with the failure counted, and the run ends
// non-zero with one error line naming the file (after the warning when the write failed).
TEST(Faults, FileSizeLimitOnTheCheckpointKeepsThePreviousOne) {
  TempDir dir;
  const std::string common = make_data(dir);
  const std::string ck = dir / "run.tbck";
  ASSERT_EQ(
      run("run fashion-mlp --epochs 1 --checkpoint " + ck + common + "--out " + (dir / "a.json"))
          .status,
      0);
  const std::string before = bytes_of(ck);
  ASSERT_GT(before.size(), 1000000u);  // 4 arrays of 101,770 floats

  const Result r = run("run fashion-mlp --epochs 2 --resume " + ck + " --checkpoint " + ck +
                           common + "--out " + (dir / "b.json"),
                       {}, 256 * 1024);
  EXPECT_EQ(r.signal, 0) << "a file-size limit killed the run";
  EXPECT_EQ(r.status, 1);
  const std::vector<std::string> errors = error_lines(r.err);
  ASSERT_EQ(errors.size(), 1u) << r.err;
  EXPECT_NE(errors[0].find("1 of 1 checkpoints could not be written to " + ck), std::string::npos)
      << errors[0];
  EXPECT_NE(errors[0].find("File too large"), std::string::npos) << errors[0];
  EXPECT_NE(r.err.find("warning: checkpoint after epoch 2 not written"), std::string::npos)
      << r.err;
  EXPECT_EQ(bytes_of(ck), before);
  EXPECT_TRUE(temps_of(ck).empty());
  EXPECT_NE(r.out.find("test accuracy "), std::string::npos) << r.out;
  const nlohmann::json b = json_file(dir / "b.json");
  EXPECT_EQ(b["steps"], 16);
  EXPECT_EQ(b["checkpoint"]["written"], 0);
  EXPECT_EQ(b["checkpoint"]["failed"], 1);
  EXPECT_EQ(tb::read_checkpoint(ck).epochs_done, 1);  // and it still loads
}

// A deterministic run killed (kill -9) inside an epoch, after a checkpoint written inside the
// epoch before the kill, resumed to the end: its weights, exported, are byte for byte the
// uninterrupted run's. The checkpoint inside an epoch comes from --steps (a run stopped there);
// --checkpoint-every writes the same kind of checkpoint, by time.
TEST(Faults, KillInsideAnEpochThenResumeGivesTheSameWeights) {
  TempDir dir;
  const std::string common = make_data(dir);
  const std::string straight = dir / "straight.tbck", ck = dir / "run.tbck";
  ASSERT_EQ(run("run fashion-mlp --epochs 3 --checkpoint " + straight + common + "--out " +
                (dir / "straight.json"))
                .status,
            0);
  // 16 steps an epoch: checkpoints after epoch 1 and at step 8 of epoch 2 (step 24).
  Result r = run("run fashion-mlp --epochs 3 --steps 24 --checkpoint " + ck + common + "--out " +
                 (dir / "a.json"));
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(tb::read_checkpoint(ck).epoch_so_far.steps, 8);
  // Resumed there and killed at step 28, inside epoch 2 with no checkpoint since.
  r = run("run fashion-mlp --epochs 3 --resume " + ck + " --checkpoint " + ck + common + "--out " +
              (dir / "b.json"),
          {"TRAINBENCH_TEST_KILL_AFTER_STEP=28"});
  ASSERT_EQ(r.signal, SIGKILL) << "status " << r.status << ": " << r.err;
  const tb::Checkpoint cut = tb::read_checkpoint(ck);
  EXPECT_EQ(cut.epochs_done, 1);
  EXPECT_EQ(cut.epoch_so_far.steps, 8);
  EXPECT_EQ(cut.updates, 24);
  r = run("run fashion-mlp --epochs 3 --resume " + ck + " --checkpoint " + ck + common + "--out " +
          (dir / "c.json"));
  ASSERT_EQ(r.status, 0) << r.err;

  for (const std::string& c : {straight, ck}) {
    r = run("export " + c + " --out " + c + ".safetensors");
    ASSERT_EQ(r.status, 0) << r.err;
  }
  const std::string want = bytes_of(straight + ".safetensors");
  EXPECT_GT(want.size(), 400000u);
  EXPECT_TRUE(bytes_of(ck + ".safetensors") == want) << "the resumed run's weights differ";
  const nlohmann::json s = json_file(dir / "straight.json"), c = json_file(dir / "c.json");
  EXPECT_EQ(c["accuracy"]["test"], s["accuracy"]["test"]);
  EXPECT_EQ(c["loss"]["epochs"], s["loss"]["epochs"]);
}

}  // namespace
