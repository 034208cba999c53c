// The ranks over MPI (Open MPI 4.1 here). Only the main thread calls MPI (FUNNELED). Errors
// come back as return codes (MPI_ERRORS_RETURN) and become Error; a rank that dies is Open MPI's
// to notice: its runtime ends the job's other processes (tests/comm/mpi_test.sh checks the bound).
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>

#include "comm/comm.h"
#include "core/error.h"

namespace tb {

namespace {

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail("{} failed: {}", what, std::string(text, size_t(len)));
}

class MpiComm final : public Comm {
 public:
  MpiComm() {
    int provided = 0;
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm node;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
          "MPI_Comm_split_type");
    MPI_Comm_size(node, &local_size_);
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_free(&node);
  }
  ~MpiComm() override { MPI_Finalize(); }

  std::string engine() const override {
    char v[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(v, &len);
    std::string s(v, size_t(len));
    return s.substr(0, s.find_first_of(",\n"));  // "Open MPI v4.1.4", not the build details
  }

  Request start_sum(float* data, int64_t count) override {
    TB_CHECK(count <= INT_MAX, "allreduce of {} floats: more than MPI's int count", count);
    auto free_slot = std::find(requests_.begin(), requests_.end(), MPI_REQUEST_NULL);
    if (free_slot == requests_.end())
      free_slot = requests_.insert(requests_.end(), MPI_REQUEST_NULL);
    check(MPI_Iallreduce(MPI_IN_PLACE, data, int(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                         &*free_slot),
          "MPI_Iallreduce");
    return Request(free_slot - requests_.begin());
  }
  bool test(Request r) override {
    int done = 0;
    check(MPI_Test(&requests_[size_t(r)], &done, MPI_STATUS_IGNORE), "MPI_Test");
    return done;
  }
  void wait(Request r) override {
    check(MPI_Wait(&requests_[size_t(r)], MPI_STATUS_IGNORE), "MPI_Wait");
  }

  void sum(double* data, int count) override {
    check(MPI_Allreduce(MPI_IN_PLACE, data, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
          "MPI_Allreduce");
  }
  int any(int flags) override {
    check(MPI_Allreduce(MPI_IN_PLACE, &flags, 1, MPI_INT, MPI_BOR, MPI_COMM_WORLD),
          "MPI_Allreduce");
    return flags;
  }
  void broadcast(void* data, size_t bytes) override {
    char* p = static_cast<char*>(data);
    for (size_t done = 0; done < bytes;) {  // int counts: 1 GiB at a time
      const int n = int(std::min<size_t>(bytes - done, size_t(1) << 30));
      check(MPI_Bcast(p + done, n, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast");
      done += size_t(n);
    }
  }

 private:
  void abort_all(const std::string& why) override {
    std::fprintf(stderr, "trainbench: error: rank %d of %d: %s\n", rank_, size_, why.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }

  std::vector<MPI_Request> requests_;
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm() {
  return std::make_unique<MpiComm>();
}

}  // namespace tb
