#pragma once
#include <signal.h>

#include <atomic>
#include <thread>

namespace tb {

// SIGINT (Ctrl-C) and SIGTERM during a run. No handler runs inside the engine's threads: both
// signals are blocked in every thread from the start of the run (threads inherit the mask, and
// the run's threads, oneDNN's OpenMP pool, the sampler, CUDA's, all start after), and one watcher
// thread takes them with sigtimedwait. While `armed` (training and the test pass) the first
// signal raises `raised`: training ends after the step under way, the test pass runs on the model
// as it stands and the record is written (hours of a CPU run are not lost to one keystroke).
// Before that (loading data, measuring peaks), or for a second signal of either kind, the
// watcher ends the process as the signal's default action would. A signal ignored when the run
// began (SIGINT for a shell's background job, nohup) stays ignored.
class StopOnSignal {
 public:
  std::atomic<bool> armed{false}, raised{false};

  StopOnSignal();
  ~StopOnSignal();
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

 private:
  sigset_t watched_, old_mask_;
  std::atomic<bool> quit_{false};
  std::thread watcher_;

  void watch();
};

}  // namespace tb
