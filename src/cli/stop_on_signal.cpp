#include "cli/stop_on_signal.h"

#include <pthread.h>

#include <ctime>

namespace tb {

StopOnSignal::StopOnSignal() {
  sigemptyset(&watched_);
  for (int sig : {SIGINT, SIGTERM}) {
    struct sigaction now {};
    sigaction(sig, nullptr, &now);
    if (now.sa_handler != SIG_IGN) sigaddset(&watched_, sig);
  }
  pthread_sigmask(SIG_BLOCK, &watched_, &old_mask_);
  watcher_ = std::thread([this] { watch(); });
}
StopOnSignal::~StopOnSignal() {
  quit_.store(true);
  watcher_.join();
  pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
}

void StopOnSignal::watch() {
  const timespec tick{0, 50'000'000};  // how soon the watcher sees the run end
  while (!quit_.load()) {
    const int sig = sigtimedwait(&watched_, nullptr, &tick);
    if (sig < 0) continue;  // the tick passed (EAGAIN) or another signal came (EINTR)
    if (armed.load() && !raised.exchange(true)) continue;
    // End the process as the signal itself would: its default action, unblocked here.
    signal(sig, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
    raise(sig);
  }
}

}  // namespace tb
