#include "comm/comm.h"

#include <algorithm>
#include <cstdlib>

#include "core/error.h"

namespace tb {

#ifdef TRAINBENCH_HAVE_MPI
std::unique_ptr<Comm> make_mpi_comm();  // comm/mpi/mpi_comm.cpp
#endif

int launcher_world_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"})
    if (const char* v = std::getenv(var)) return std::max(1, std::atoi(v));
  return 0;
}

std::unique_ptr<Comm> make_comm() {
  const int world = launcher_world_size();
  if (world == 0) return nullptr;  // not launched: today's single process, MPI untouched
#ifdef TRAINBENCH_HAVE_MPI
  return make_mpi_comm();
#else
  TB_CHECK(world == 1,
           "started as one of {} ranks, but this trainbench was built without MPI "
           "(libopenmpi-dev, then configure with -DTRAINBENCH_MPI=ON)",
           world);
  return nullptr;
#endif
}

void agree_settings(Comm& c, const std::vector<std::pair<std::string, std::string>>& settings) {
  // Rank 0's values, each as its length then its bytes, in one broadcast after the total size.
  std::string mine;
  for (const auto& [name, value] : settings) mine += std::to_string(value.size()) + ":" + value;
  uint64_t bytes = mine.size();
  c.broadcast(&bytes, sizeof(bytes));
  std::string theirs = c.rank() == 0 ? mine : std::string(bytes, '\0');
  c.broadcast(theirs.data(), bytes);
  std::string difference;
  size_t at = 0;
  for (const auto& [name, value] : settings) {
    const size_t colon = theirs.find(':', at);
    if (colon == std::string::npos) {
      difference = "the settings' list";
      break;
    }
    const size_t len = std::stoull(theirs.substr(at, colon - at));
    const std::string root = theirs.substr(colon + 1, len);
    at = colon + 1 + len;
    if (root != value) {
      difference = name + " " + value + " where rank 0 has " + root;
      break;
    }
  }
  if (!c.any(!difference.empty())) return;
  if (difference.empty()) throw RanksDisagree("");  // another rank says what differs
  throw RanksDisagree(fmt::format(
      "rank {} of {} was started with {}: every rank must run the same workload, settings and "
      "data",
      c.rank(), c.size(), difference));
}

}  // namespace tb
