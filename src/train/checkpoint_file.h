// The checkpoint file of one `run`: what may be written where, and what happens when it cannot.
//   - a --checkpoint file that exists is replaced only by the run that goes on from it (--resume
//     of the same file): otherwise hours of an earlier run would go at the first checkpoint;
//   - a --resume checkpoint is read and checked before any data loads;
//   - a write that fails (full disk) ends neither the run nor the previous checkpoint (written
//     whole or not at all): a warning now, counted, and a non-zero exit at the end.
//   - a writer killed mid-write (kill -9) leaves the previous checkpoint whole and its temp file
//     beside it: the next run with the same --checkpoint removes that.
#pragma once
#include <optional>
#include <string>

#include "train/checkpoint.h"

namespace tb {

class CheckpointFile {
 public:
  // path: --checkpoint ("" for none); resume: --resume ("" for none); every_minutes: 0 for epochs'
  // ends only. Throws Error for a file the run may not replace or a checkpoint it cannot resume.
  CheckpointFile(const std::string& path, const std::string& resume, double every_minutes,
                 const Hyper& hp);

  // For the runner: resume from, write to, how often.
  CheckpointPlan plan();
  // The checkpoint the run resumes from (null without --resume); its arrays can be released once
  // restored (release_arrays).
  Checkpoint* resumed() { return resume_ ? &*resume_ : nullptr; }
  const std::string& path() const { return path_; }
  const std::string& resume_path() const { return resume_path_; }
  double every_minutes() const { return every_minutes_; }
  int64_t failures() const { return failures_; }
  const std::string& last_error() const { return last_error_; }
  // Where the last written checkpoint stands ("after epoch 3"), "" for none.
  const std::string& stands() const { return stands_; }

 private:
  std::string path_, resume_path_;
  double every_minutes_ = 0;
  std::optional<Checkpoint> resume_;
  int64_t failures_ = 0;
  std::string last_error_, stands_;
};

}  // namespace tb
