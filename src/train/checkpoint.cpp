#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/file.h"
#include "core/json_depth.h"

namespace tb {

static constexpr char kMagic[8] = {'T', 'B', 'C', 'K', 'P', 'T', 0, 1};
// The arrays and lengths are written as they lie in memory: little-endian, as the format says.
static_assert(std::endian::native == std::endian::little, "checkpoints are little-endian");

static uint32_t crc_add(uint32_t crc, const void* p, size_t bytes) {
  const auto* b = static_cast<const Bytef*>(p);
  while (bytes > 0) {  // zlib takes a uInt length
    const uInt k = uInt(std::min<size_t>(bytes, 1u << 30));
    crc = uint32_t(crc32(crc, b, k));
    b += k, bytes -= k;
  }
  return crc;
}

static nlohmann::json header_json(const Checkpoint& c) {
  nlohmann::json epochs = nlohmann::json::array();
  for (const EpochResult& e : c.epochs)
    epochs.push_back({{"seconds", e.seconds},
                      {"loss", e.loss},
                      {"accuracy", e.accuracy},
                      {"steps", e.steps},
                      {"images", e.images}});
  return {{"format", "trainbench checkpoint"},
          {"workload", c.workload},
          {"param_count", c.param_count},
          {"state_count", c.state_count},
          {"train_count", c.train_count},
          {"hyper", c.hyper},
          {"device", c.device},
          {"epochs_done", c.epochs_done},
          {"epoch_so_far",
           {{"steps", c.epoch_so_far.steps},
            {"images", c.epoch_so_far.images},
            {"seconds", c.epoch_so_far.seconds},
            {"loss_sum", c.epoch_so_far.loss_sum},  // NaN: null
            {"correct", c.epoch_so_far.correct}}},
          {"updates", c.updates},
          {"shuffle_rng", c.shuffle_rng},
          {"epochs", epochs},
          {"arrays",
           {{"params", c.params.size()},
            {"opt_m", c.opt_m.size()},
            {"opt_v", c.opt_v.size()},
            {"state", c.state.size()}}}};
}

std::string checkpoint_place(const Checkpoint& c) {
  if (c.epoch_so_far.steps == 0) return fmt::format("after epoch {}", c.epochs_done);
  return fmt::format("at step {} of epoch {}", c.epoch_so_far.steps, c.epochs_done + 1);
}

void release_arrays(Checkpoint& c) {
  for (std::vector<float>* v : {&c.params, &c.opt_m, &c.opt_v, &c.state})
    std::vector<float>().swap(*v);
}

void write_checkpoint(const std::string& path, const Checkpoint& c) {
  const std::string header = header_json(c).dump();
  write_file_atomic(path, [&](const std::string& tmp) {
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return false;
    uint32_t crc = uint32_t(crc32(0, nullptr, 0));
    auto put = [&](const void* p, size_t bytes) {
      crc = crc_add(crc, p, bytes);
      return write_all(fd, p, bytes);
    };
    const uint64_t header_len = header.size();
    bool ok = put(kMagic, sizeof(kMagic)) && put(&header_len, sizeof(header_len)) &&
              put(header.data(), header.size());
    for (const std::vector<float>* a : {&c.params, &c.opt_m, &c.opt_v, &c.state})
      ok = ok && put(a->data(), a->size() * sizeof(float));
    const uint32_t sum = crc;
    ok = ok && put(&sum, sizeof(sum));
    const int err = errno;
    if (::close(fd) != 0) ok = false;
    if (!ok) errno = err;
    return ok;
  });
}

Checkpoint read_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("checkpoint {}: cannot open ({})", path, std::strerror(errno));
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) fail("checkpoint {}: cannot open ({})", path, ec.message());
  return read_checkpoint(in, size, path);
}

Checkpoint read_checkpoint(std::istream& in, uint64_t size, const std::string& path) {
  uint32_t crc = uint32_t(crc32(0, nullptr, 0));
  auto get = [&](void* p, size_t bytes, const char* what) {
    in.read(static_cast<char*>(p), std::streamsize(bytes));
    if (size_t(in.gcount()) != bytes) fail("checkpoint {}: truncated (in its {})", path, what);
    crc = crc_add(crc, p, bytes);
  };
  char magic[8];
  get(magic, sizeof(magic), "magic");
  if (std::memcmp(magic, kMagic, 6) != 0) fail("checkpoint {}: not a trainbench checkpoint", path);
  if (std::memcmp(magic, kMagic, 8) != 0)
    fail("checkpoint {}: format version {} (this trainbench reads version {})", path,
         int(uint8_t(magic[7])), int(kMagic[7]));
  uint64_t header_len = 0;
  get(&header_len, sizeof(header_len), "header length");
  if (header_len > (64u << 20))
    fail("checkpoint {}: corrupt (header of {} bytes)", path, header_len);
  if (sizeof(kMagic) + sizeof(header_len) + header_len > size)
    fail("checkpoint {}: truncated (in its header)", path);
  std::string text(header_len, '\0');
  get(text.data(), text.size(), "header");
  nlohmann::json h = nlohmann::json::parse(text, nullptr, false);
  if (h.is_discarded() || !h.is_object() || json_nests_deeper(h) || !h.contains("format") ||
      h["format"] != "trainbench checkpoint")
    fail("checkpoint {}: corrupt (its header is not the expected JSON)", path);

  // JSON has no NaN: a diverged epoch's loss was written as null.
  auto number = [](const nlohmann::json& v) { return v.is_null() ? NAN : v.get<double>(); };
  // Counts must be JSON integers: converting one such as 1e300 to int64_t is undefined.
  auto integer = [&](const nlohmann::json& object, const char* key) {
    const nlohmann::json& v = object.at(key);
    if (!v.is_number_integer())
      fail("checkpoint {}: corrupt header ({} is not an integer)", path, key);
    return v.get<int64_t>();
  };
  Checkpoint c;
  try {
    c.workload = h.at("workload").get<std::string>();
    c.param_count = integer(h, "param_count");
    c.state_count = integer(h, "state_count");
    c.train_count = integer(h, "train_count");
    c.hyper = h.at("hyper");
    c.device = h.at("device").get<std::string>();
    c.epochs_done = int(integer(h, "epochs_done"));
    if (h.contains("epoch_so_far")) {  // absent: an epoch's end
      const nlohmann::json& p = h["epoch_so_far"];
      EpochSoFar& f = c.epoch_so_far;
      f.steps = integer(p, "steps"), f.images = integer(p, "images");
      f.seconds = p.at("seconds").get<double>();
      f.loss_sum = float(number(p.at("loss_sum"))), f.correct = p.at("correct").get<float>();
    }
    c.updates = integer(h, "updates");
    c.shuffle_rng = h.at("shuffle_rng").get<std::string>();
    for (const nlohmann::json& e : h.at("epochs")) {
      EpochResult r;
      r.seconds = number(e.at("seconds")), r.loss = number(e.at("loss"));
      r.accuracy = number(e.at("accuracy"));
      r.steps = integer(e, "steps"), r.images = integer(e, "images");
      c.epochs.push_back(r);
    }
    // Sizes before any allocation: a damaged header must not ask for gigabytes.
    const nlohmann::json& a = h.at("arrays");
    const uint64_t P = uint64_t(c.param_count), S = uint64_t(c.state_count);
    if (c.param_count < 0 || c.state_count < 0 || integer(a, "params") != c.param_count ||
        integer(a, "opt_m") != c.param_count || integer(a, "opt_v") != c.param_count ||
        integer(a, "state") != c.state_count || int(c.epochs.size()) != c.epochs_done)
      fail("checkpoint {}: corrupt (array sizes disagree with its header)", path);
    if (P > size / (3 * sizeof(float)) || S > size / sizeof(float))
      fail(
          "checkpoint {}: truncated ({} bytes where its header declares {} parameters and {} "
          "state values)",
          path, size, P, S);
    const uint64_t expected = sizeof(kMagic) + sizeof(header_len) + header_len +
                              (3 * P + S) * sizeof(float) + sizeof(uint32_t);
    if (size != expected)
      fail("checkpoint {}: {} ({} bytes where its header says {})", path,
           size < expected ? "truncated" : "corrupt", size, expected);
    for (auto [name, v] : {std::pair{"params", &c.params}, std::pair{"opt_m", &c.opt_m},
                           std::pair{"opt_v", &c.opt_v}, std::pair{"state", &c.state}}) {
      v->resize(v == &c.state ? S : P);
      get(v->data(), v->size() * sizeof(float), name);
    }
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint {}: corrupt header ({})", path, e.what());
  }
  const uint32_t computed = crc;
  uint32_t stored = 0;
  get(&stored, sizeof(stored), "checksum");
  if (stored != computed) fail("checkpoint {}: corrupt (checksum does not match)", path);
  return c;
}

void check_resumable(const Checkpoint& c, const std::string& path, const Hyper& hp) {
  if (c.workload != hp.workload)
    fail("checkpoint {} is of workload {}, not {}", path, c.workload, hp.workload);
  const nlohmann::json now = hyper_json(hp);
  for (const char* key : {"batch", "seed", "augment", "optimizer", "adam", "sgd"}) {
    const nlohmann::json was = c.hyper.value(key, nlohmann::json());
    const nlohmann::json is = now.value(key, nlohmann::json());
    if (was != is)
      fail("checkpoint {} was written with {} {}; this run has {} (resume with the same)", path,
           key, was.dump(), is.dump());
  }
  if (hp.epochs <= c.epochs_done)
    fail(
        "checkpoint {0} stops {1}; --epochs {2} adds no step (give the run's total, or test the "
        "model as it stands: trainbench evaluate {0})",
        path, checkpoint_place(c), hp.epochs);
}

}  // namespace tb
