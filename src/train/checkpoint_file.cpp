#include "train/checkpoint_file.h"

#include <fmt/format.h>

#include <filesystem>

#include "core/error.h"
#include "core/file.h"

namespace tb {

CheckpointFile::CheckpointFile(const std::string& path, const std::string& resume,
                               double every_minutes, const Hyper& hp)
    : path_(path), resume_path_(resume), every_minutes_(every_minutes) {
  TB_CHECK(every_minutes == 0 || !path.empty(),
           "--checkpoint-every needs --checkpoint FILE (where to write)");
  if (!path.empty() && std::filesystem::exists(path)) {
    std::error_code ec;
    TB_CHECK(!resume.empty() && std::filesystem::equivalent(path, resume, ec),
             "--checkpoint {0}: the file exists; add --resume {0} to go on from it, or remove it "
             "to start over",
             path);
  }
  if (!path.empty()) remove_stale_temps(path);  // a run killed mid-write left them
  if (!resume.empty()) {
    resume_ = read_checkpoint(resume);
    check_resumable(*resume_, resume, hp);
  }
}

CheckpointPlan CheckpointFile::plan() {
  CheckpointPlan p;
  if (resume_) p.resume = &*resume_, p.resume_path = resume_path_;
  p.every_s = 60 * every_minutes_;
  if (path_.empty()) return p;
  p.write = [this](const Checkpoint& c) {
    try {
      write_checkpoint(path_, c);
      stands_ = checkpoint_place(c);
      return true;
    } catch (const Error& e) {
      failures_++, last_error_ = e.what();
      fmt::print(stderr, "trainbench: warning: checkpoint {} not written: {}\n",
                 checkpoint_place(c), e.what());
      return false;
    }
  };
  return p;
}

}  // namespace tb
