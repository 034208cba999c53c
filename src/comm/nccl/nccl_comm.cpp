// GPU ranks: gradients summed by NCCL on the backend's stream, everything small and host-side
// (flags, the epoch's sums, settings, the start's broadcast) through the MPI communicator that
// launched the ranks. NCCL is loaded at run time as elsewhere (cmake/cuda_libs.cmake), so a
// binary built with it starts where it is missing. Built where nccl.h is found (elsewhere
// make_nccl_comm says so); `run` takes it for CUDA ranks under mpirun. Not yet run: it needs two
// GPUs.
#ifdef TRAINBENCH_HAVE_NCCL
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

#include <memory>
#include <type_traits>
#include <vector>

#include "comm/comm.h"
#include "core/error.h"

namespace tb {

namespace {

struct NcclApi {
  ncclResult_t (*get_unique_id)(ncclUniqueId*);
  ncclResult_t (*init_rank)(ncclComm_t*, int, ncclUniqueId, int);
  ncclResult_t (*all_reduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                             cudaStream_t);
  ncclResult_t (*abort)(ncclComm_t);
  ncclResult_t (*destroy)(ncclComm_t);
  const char* (*error_string)(ncclResult_t);

  NcclApi() {
    void* lib = dlopen("libnccl.so.2", RTLD_LAZY | RTLD_LOCAL);
    if (!lib) lib = dlopen(TRAINBENCH_NCCL_LIBRARY, RTLD_LAZY | RTLD_LOCAL);
    TB_CHECK(lib, "GPU ranks need NCCL (libnccl.so.2): not found");
    auto sym = [lib](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      TB_CHECK(fn, "NCCL: no {} in libnccl.so.2", name);
    };
    sym(get_unique_id, "ncclGetUniqueId");
    sym(init_rank, "ncclCommInitRank");
    sym(all_reduce, "ncclAllReduce");
    sym(abort, "ncclCommAbort");
    sym(destroy, "ncclCommDestroy");
    sym(error_string, "ncclGetErrorString");
  }
  void check(ncclResult_t r, const char* what) const {
    if (r != ncclSuccess) fail("{} failed: {}", what, error_string(r));
  }
};

class NcclComm final : public Comm {
 public:
  // host: the launcher's communicator (rank 0's NCCL id goes through it); stream: the backend's,
  // so a sum starts after the backward kernels before it and the optimizer runs after it.
  NcclComm(Comm& host, cudaStream_t stream) : host_(&host), stream_(stream) {
    rank_ = host_->rank(), size_ = host_->size(), local_size_ = host_->local_size();
    local_rank_ = host_->local_rank();
    ncclUniqueId id{};
    if (rank_ == 0) nccl_.check(nccl_.get_unique_id(&id), "ncclGetUniqueId");
    host_->broadcast(&id, sizeof(id));
    nccl_.check(nccl_.init_rank(&comm_, size_, id, rank_), "ncclCommInitRank");
  }
  ~NcclComm() override {
    for (cudaEvent_t e : done_) cudaEventDestroy(e);
    if (comm_) nccl_.destroy(comm_);
  }

  std::string engine() const override { return "NCCL over " + host_->engine(); }

  Request start_sum(float* data, int64_t count) override {
    nccl_.check(nccl_.all_reduce(data, data, size_t(count), ncclFloat32, ncclSum, comm_, stream_),
                "ncclAllReduce");
    // An event marks its end; events are reused once waited for (a few buckets a step).
    size_t k = 0;
    while (k < busy_.size() && busy_[k]) ++k;
    if (k == done_.size()) {
      cudaEvent_t e = nullptr;
      TB_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess,
               "ncclAllReduce: cannot create an event");
      done_.push_back(e), busy_.push_back(false);
    }
    TB_CHECK(cudaEventRecord(done_[k], stream_) == cudaSuccess,
             "ncclAllReduce: cannot record its end on the stream");
    busy_[k] = true;
    return Request(k);
  }
  bool test(Request r) override { return cudaEventQuery(done_[size_t(r)]) == cudaSuccess; }
  // The optimizer follows on the same stream: the host need not wait; it does here so the
  // executor's timing holds (the exposed time is then the host's, as on the CPU).
  void wait(Request r) override {
    TB_CHECK(cudaEventSynchronize(done_[size_t(r)]) == cudaSuccess, "ncclAllReduce failed");
    busy_[size_t(r)] = false;
  }

  void sum(double* data, int count) override { host_->sum(data, count); }
  int any(int flags) override { return host_->any(flags); }
  void broadcast(void* data, size_t bytes) override { host_->broadcast(data, bytes); }

 private:
  void abort_all(const std::string& why) override {
    if (comm_) nccl_.abort(comm_), comm_ = nullptr;
    host_->abort(why);
  }

  NcclApi nccl_;
  Comm* host_;
  cudaStream_t stream_;
  ncclComm_t comm_ = nullptr;
  std::vector<cudaEvent_t> done_;
  std::vector<bool> busy_;
};

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(Comm& host, void* stream) {
  return std::make_unique<NcclComm>(host, static_cast<cudaStream_t>(stream));
}

}  // namespace tb
#else
#include "comm/comm.h"

namespace tb {
std::unique_ptr<Comm> make_nccl_comm(Comm&, void*) {
  fail("CUDA ranks under mpirun need NCCL, and this build has none (nccl.h was not found)");
}
}  // namespace tb
#endif  // TRAINBENCH_HAVE_NCCL
