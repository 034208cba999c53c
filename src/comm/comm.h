// The ranks of a data-parallel run: one process per device, started by mpirun (or srun). The
// executor sums gradients through this interface and the runner agrees on when to stop; MPI
// implements it on the CPU (src/comm/mpi), NCCL (src/comm/nccl) sums GPU ranks'
// gradients behind the same calls.
// A process started without a launcher has no Comm at all (make_comm returns null): nothing
// here runs, MPI is never initialised.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace tb {

class Comm {
 public:
  virtual ~Comm() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_size() const { return local_size_; }  // ranks on this node (sharing its cores)
  int local_rank() const { return local_rank_; }  // this rank's place among them (its GPU)
  // "Open MPI v4.1.4": the library and its version, for the record.
  virtual std::string engine() const = 0;

  // Sum of `count` floats over the ranks, in place, started now; test() moves it on (MPI without
  // a progress thread moves only inside its calls) and says whether it is done; wait() ends it.
  // The buffer is the backend's memory (host memory on the CPU).
  using Request = int;
  virtual Request start_sum(float* data, int64_t count) = 0;
  virtual bool test(Request r) = 0;
  virtual void wait(Request r) = 0;

  // Blocking, small: sums (the epoch's loss and correct counts), the flags any rank raised
  // (bitwise or: Ctrl-C, a checkpoint due; every rank must stop at the same step), rank 0's bytes
  // to all.
  virtual void sum(double* data, int count) = 0;
  virtual int any(int flags) = 0;
  virtual void broadcast(void* data, size_t bytes) = 0;

  // Ends every rank now, saying why on this one's stderr (a rank that failed alone: the others
  // would wait for it forever).
  [[noreturn]] void abort(const std::string& why) {
    abort_all(why);
    std::_Exit(1);
  }

 protected:
  virtual void abort_all(const std::string& why) = 0;
  int rank_ = 0, size_ = 1, local_size_ = 1, local_rank_ = 0;
};

// The launcher's world size from its environment (Open MPI, MPICH/PMI, Slurm), 0 where none
// launched this process.
int launcher_world_size();

// GPU ranks: gradient sums through NCCL on `stream` (the CUDA backend's cudaStream_t), the rest
// through `host`, which must outlive it (comm/nccl/nccl_comm.cpp; built where nccl.h is found,
// not yet run: it needs two GPUs). Throws Error where this build has no NCCL.
std::unique_ptr<Comm> make_nccl_comm(Comm& host, void* stream);

// The communicator of a launched process, null for a plain one. Throws Error where a launcher
// started several ranks but this build has no MPI.
std::unique_ptr<Comm> make_comm();

// Every rank knows it failed (the settings check): they end together, no abort needed. The
// ranks that matched carry an empty message (the one line is the differing rank's).
struct RanksDisagree : Error {
  using Error::Error;
};

// Settings every rank must share (name, value): rank 0's are broadcast and each rank compares
// its own. Throws RanksDisagree on every rank where any differs, naming the first difference on
// the ranks that differ.
void agree_settings(Comm& c, const std::vector<std::pair<std::string, std::string>>& settings);

}  // namespace tb
