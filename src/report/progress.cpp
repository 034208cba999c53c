#include "report/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <string>

namespace tb {

ProgressPrinter::ProgressPrinter(std::FILE* f) : out(f), tty(isatty(fileno(f))) {}

static std::string human_seconds(double s) {
  if (s < 60) return fmt::format("{:.0f}s", s);
  return fmt::format("{}:{:02d}", int(s) / 60, int(s) % 60);
}

void ProgressPrinter::operator()(const Progress& p) {
  const double per_step = p.step ? p.elapsed_s / double(p.step) : 0;
  const std::string stats = fmt::format("loss: {:.4f} - accuracy: {:.4f}", p.loss, p.accuracy);
  if (!tty) {
    if (p.epoch_done)
      fmt::print(out, "epoch {}/{}: {} steps, {:.2f}s ({:.0f}us/step) - {}\n", p.epoch, p.epochs,
                 p.step, p.elapsed_s, per_step * 1e6, stats);
    std::fflush(out);
    return;
  }
  constexpr int kWidth = 30;
  const int filled = p.steps ? int(kWidth * p.step / p.steps) : kWidth;
  std::string bar(size_t(filled), '=');
  if (filled < kWidth) bar += '>', bar += std::string(size_t(kWidth - filled - 1), '.');
  const std::string timing =
      p.epoch_done ? fmt::format("{} {:.0f}us/step", human_seconds(p.elapsed_s), per_step * 1e6)
                   : fmt::format("ETA: {}", human_seconds(per_step * double(p.steps - p.step)));
  const int digits = int(std::to_string(p.steps).size());
  fmt::print(out, "\rEpoch {}/{} {:>{}}/{} [{}] - {} - {}\033[K", p.epoch, p.epochs, p.step, digits,
             p.steps, bar, timing, stats);
  if (p.epoch_done) fmt::print(out, "\n");
  std::fflush(out);
}

}  // namespace tb
