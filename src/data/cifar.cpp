#include "data/cifar.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "data/image.h"
#include "data/tar.h"

namespace fs = std::filesystem;

namespace tb {
namespace {

constexpr int kSide = 32, kPixels = 3 * kSide * kSide, kRecord = 1 + kPixels, kBatches = 5;
constexpr const char* kBinDir = "cifar-10-batches-bin";
constexpr const char* kHowTo =
    "put cifar-10-batches-bin/ (from cifar-10-binary.tar.gz), an image folder "
    "(train/<class>/*.jpg, test/<class>/*.jpg) or a .tar.gz of either there, or pass --data "
    "PATH; `trainbench data` converts an image folder or .tar.gz to the binary layout";

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) s += (i ? sep : "") + v[i];
  return s;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (!fs::exists(st)) fail("{}: file not found", path);
  if (!fs::is_regular_file(st)) fail("{}: not a regular file", path);
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail("{}: cannot open: {}", path, std::strerror(errno));
  std::vector<uint8_t> out(fs::file_size(path, ec));
  bool ok = !ec && std::fread(out.data(), 1, out.size(), f) == out.size() && std::fgetc(f) == EOF;
  std::fclose(f);
  if (!ok) fail("{}: read error (or the file changed while being read)", path);
  return out;
}

Dataset empty_cifar(const std::string& name, const std::string& source, int classes) {
  Dataset d;
  d.name = name;
  d.source = source;
  d.channels = 3, d.height = kSide, d.width = kSide;
  d.classes = classes;
  return d;
}

std::string batch_name(int b) {
  return b < kBatches ? fmt::format("data_batch_{}.bin", b + 1) : "test_batch.bin";
}

DatasetPair read_binary_dir(const std::string& dir, const std::string& source) {
  std::vector<std::string> train;
  for (int b = 0; b <= kBatches; b++) {
    std::string p = (fs::path(dir) / batch_name(b)).string();
    std::error_code ec;
    if (!fs::exists(p, ec))
      fail("{}: missing (a CIFAR-10 binary folder needs data_batch_1..5.bin and test_batch.bin)",
           p);
    if (b < kBatches) train.push_back(p);
  }
  DatasetPair out;
  out.train = read_cifar_batches(train, "cifar10");
  out.test = read_cifar_batches({(fs::path(dir) / batch_name(kBatches)).string()}, "cifar10");
  out.train.source = out.test.source = source;
  return out;
}

bool is_image_name(const std::string& file) {
  if (file.empty() || file[0] == '.') return false;  // hidden, e.g. macOS "._x.jpg" forks
  std::string ext = fs::path(file).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// Maps the class folders found under train/ and test/ to labels (see read_image_folder).
std::vector<std::string> resolve_classes(const std::set<std::string>& train,
                                         const std::set<std::string>& test,
                                         const std::vector<std::string>& given,
                                         const std::string& root) {
  std::vector<std::string> classes = given;
  if (classes.empty()) classes.assign(train.begin(), train.end());
  if (classes.empty()) fail("{}/train: no class folders with images", root);
  if (classes.size() > 256) fail("{}/train: {} class folders, at most 256", root, classes.size());
  std::set<std::string> want(classes.begin(), classes.end());
  if (want.size() != classes.size()) fail("{}: the class list has duplicates", root);
  for (auto [split, found] : {std::pair{"train", &train}, std::pair{"test", &test}}) {
    for (const auto& c : *found)
      if (!want.count(c))
        fail("{}/{}/{}: unexpected class folder (classes: {})", root, split, c, join(classes, " "));
    for (const auto& c : classes)
      if (!found->count(c))
        fail("{}/{}/{}: class folder missing or without images", root, split, c);
  }
  return classes;
}

// One image to decode: from disk (bytes == nullptr, name is the path) or from an archive member.
struct ImageJob {
  std::string name;
  const std::vector<uint8_t>* bytes;
  uint8_t label;
};

Dataset decode_jobs(const std::vector<ImageJob>& jobs, const std::string& name,
                    const std::string& source, int classes) {
  Dataset d = empty_cifar(name, source, classes);
  d.count = int64_t(jobs.size());
  d.images.resize(jobs.size() * kPixels);
  d.labels.resize(jobs.size());
  std::atomic<bool> failed{false};
  std::mutex mu;
  int64_t bad_index = INT64_MAX;
  std::string bad_msg;
  const int64_t n = d.count;
  // Exceptions must not leave an OpenMP region: keep the first failure, skip the rest, rethrow.
#pragma omp parallel for schedule(dynamic, 256)
  for (int64_t i = 0; i < n; i++) {
    if (failed.load(std::memory_order_relaxed)) continue;
    const ImageJob& j = jobs[i];
    try {
      if (j.bytes) {
        decode_rgb_image(j.bytes->data(), j.bytes->size(), kSide, kSide, &d.images[i * kPixels],
                         j.name);
      } else {
        std::vector<uint8_t> file = read_file(j.name);
        decode_rgb_image(file.data(), file.size(), kSide, kSide, &d.images[i * kPixels], j.name);
      }
      d.labels[i] = j.label;
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mu);
      if (i < bad_index) bad_index = i, bad_msg = e.what();
      failed = true;
    }
  }
  if (failed) throw Error(bad_msg);
  return d;
}

std::set<std::string> list_subdirs(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string n = e.path().filename().string();
    if (n[0] != '.' && e.is_directory()) out.insert(n);
  }
  return out;
}

DatasetPair image_folder_from_tar(const std::vector<TarMember>& members, const std::string& tar,
                                  const std::vector<std::string>& given, const std::string& name) {
  struct Hit {
    const TarMember* m;
    std::string split, cls;
  };
  std::vector<Hit> hits;
  std::set<std::string> roots;
  for (const auto& m : members) {
    fs::path p(m.path);
    std::vector<std::string> parts;
    for (const auto& c : p) parts.push_back(c.string());
    size_t n = parts.size();
    if (n < 3 || !is_image_name(parts[n - 1]) ||
        (parts[n - 3] != "train" && parts[n - 3] != "test"))
      continue;
    std::vector<std::string> root(parts.begin(), parts.end() - 3);
    roots.insert(join(root, "/"));
    hits.push_back({&m, parts[n - 3], parts[n - 2]});
  }
  if (roots.empty())
    fail("{}: holds neither {}/ nor an image folder (train/<class>/*.jpg, test/<class>/*.jpg)", tar,
         kBinDir);
  if (roots.size() > 1)
    fail("{}: image folders at several roots: {}", tar,
         join(std::vector<std::string>(roots.begin(), roots.end()), ", "));
  std::string where = tar + ":" + *roots.begin();
  std::set<std::string> found[2];
  for (const auto& h : hits) found[h.split == "test"].insert(h.cls);
  std::vector<std::string> classes = resolve_classes(found[0], found[1], given, where);
  std::map<std::string, int> label;
  for (size_t i = 0; i < classes.size(); i++) label[classes[i]] = int(i);
  // Same order as a directory read: by class, then by file name.
  std::sort(hits.begin(), hits.end(), [&](const Hit& a, const Hit& b) {
    int la = label[a.cls], lb = label[b.cls];
    return la != lb ? la < lb : a.m->path < b.m->path;
  });
  std::vector<ImageJob> jobs[2];
  for (const auto& h : hits)
    jobs[h.split == "test"].push_back(
        {tar + ":" + h.m->path, h.m->data.get(), uint8_t(label[h.cls])});
  DatasetPair out;
  out.train = decode_jobs(jobs[0], name, tar, int(classes.size()));
  out.test = decode_jobs(jobs[1], name, tar, int(classes.size()));
  return out;
}

bool is_batch_name(const std::string& file) {
  for (int b = 0; b <= kBatches; b++)
    if (file == batch_name(b)) return true;
  return false;
}

DatasetPair binary_from_tar(const std::vector<TarMember>& members, const std::string& tar) {
  const TarMember* batch[kBatches + 1] = {};
  for (const auto& m : members) {
    std::string file = fs::path(m.path).filename().string();
    for (int b = 0; b <= kBatches; b++) {
      if (file != batch_name(b)) continue;
      if (batch[b]) fail("{}: holds {} twice ({} and {})", tar, file, batch[b]->path, m.path);
      batch[b] = &m;
    }
  }
  DatasetPair out;
  out.train = empty_cifar("cifar10", tar, 10);
  out.test = empty_cifar("cifar10", tar, 10);
  for (int b = 0; b <= kBatches; b++) {
    if (!batch[b])
      fail("{}: {} missing (needs data_batch_1..5.bin and test_batch.bin)", tar, batch_name(b));
    append_cifar_records(batch[b]->data->data(), batch[b]->data->size(), tar + ":" + batch[b]->path,
                         b < kBatches ? out.train : out.test);
  }
  return out;
}

DatasetPair load_tar(const std::string& path) {
  std::vector<TarMember> members = read_tar(path);
  bool binary = std::any_of(members.begin(), members.end(), [](const TarMember& m) {
    return is_batch_name(fs::path(m.path).filename().string());
  });
  return binary ? binary_from_tar(members, path)
                : image_folder_from_tar(members, path, cifar10_classes(), "cifar10");
}

bool is_tar_name(const std::string& file) {
  return file.ends_with(".tar.gz") || file.ends_with(".tgz") || file.ends_with(".tar");
}

DatasetPair load_dir(const fs::path& dir, int depth) {
  std::error_code ec;
  if (fs::is_regular_file(dir / kBinDir / "data_batch_1.bin", ec))
    return read_binary_dir((dir / kBinDir).string(), dir.string());
  if (fs::is_regular_file(dir / "data_batch_1.bin", ec))
    return read_binary_dir(dir.string(), dir.string());
  if (fs::is_directory(dir / "train", ec) && fs::is_directory(dir / "test", ec)) {
    DatasetPair out = read_image_folder(dir.string(), cifar10_classes(), "cifar10");
    out.train.source = out.test.source = dir.string();
    return out;
  }
  // One level down, e.g. data/cifar10/cifar10-jpeg/ or data/cifar10/cifar10-jpeg.tar.gz.
  std::vector<fs::path> found;
  if (depth == 0) {
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const fs::path& p = e.path();
      std::string n = p.filename().string();
      if (n[0] == '.') continue;
      bool data_dir =
          e.is_directory() &&
          (fs::is_directory(p / kBinDir) || fs::is_regular_file(p / "data_batch_1.bin") ||
           (fs::is_directory(p / "train") && fs::is_directory(p / "test")));
      if (data_dir || (e.is_regular_file() && is_tar_name(n))) found.push_back(p);
    }
  }
  if (found.size() == 1)
    return fs::is_directory(found[0]) ? load_dir(found[0], 1) : load_tar(found[0].string());
  if (found.size() > 1) {
    std::vector<std::string> names;
    for (const auto& p : found) names.push_back(p.filename().string());
    std::sort(names.begin(), names.end());
    fail("cifar10: {} holds several data sets ({}); pass one of them with --data", dir.string(),
         join(names, ", "));
  }
  fail("cifar10: {} holds no CIFAR-10 data; {}", dir.string(), kHowTo);
}

// Through a temp file + rename (core/file.h) so a reader never sees a half-written file.
template <typename Body>
void write_atomic(const std::string& path, Body body) {
  write_file_atomic(path, [&](const std::string& tmp) {
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) return false;
    const bool ok = body(f);
    return (std::fclose(f) == 0) && ok;
  });
}

void write_batch(const std::string& path, const Dataset& d, int64_t begin, int64_t end) {
  write_atomic(path, [&](FILE* f) {
    for (int64_t i = begin; i < end; i++)
      if (std::fwrite(&d.labels[i], 1, 1, f) != 1 ||
          std::fwrite(&d.images[i * kPixels], 1, kPixels, f) != size_t(kPixels))
        return false;
    return true;
  });
}

void check_writable(const Dataset& d, const char* split, int64_t min_count) {
  TB_CHECK(d.channels == 3 && d.height == kSide && d.width == kSide,
           "write_cifar_binary: {} images are {}x{}x{}, expected 3x32x32", split, d.channels,
           d.height, d.width);
  TB_CHECK(d.count >= min_count, "write_cifar_binary: {} has {} images, needs at least {}", split,
           d.count, min_count);
  TB_CHECK(d.images.size() == size_t(d.count) * kPixels && d.labels.size() == size_t(d.count),
           "write_cifar_binary: {} has {} image bytes and {} labels for {} images", split,
           d.images.size(), d.labels.size(), d.count);
  for (int64_t i = 0; i < d.count; i++)
    TB_CHECK(d.labels[i] <= 9, "write_cifar_binary: {} label {} at index {} is not 0..9", split,
             d.labels[i], i);
}

}  // namespace

const std::vector<std::string>& cifar10_classes() {
  static const std::vector<std::string> k = {"airplane", "automobile", "bird",  "cat",  "deer",
                                             "dog",      "frog",       "horse", "ship", "truck"};
  return k;
}

void append_cifar_records(const uint8_t* p, size_t n, const std::string& what, Dataset& d) {
  if (n == 0) fail("{}: empty, expected records of {} bytes", what, kRecord);
  if (n % kRecord)
    fail("{}: {} bytes is not a multiple of the {}-byte record: record {} is short by {} bytes",
         what, n, kRecord, n / kRecord, kRecord - n % kRecord);
  size_t count = n / kRecord;
  for (size_t r = 0; r < count; r++)
    if (p[r * kRecord] > 9)
      fail("{}: record {} has label {}, expected 0..9", what, r, p[r * kRecord]);
  size_t at = d.images.size();
  d.images.resize(at + count * kPixels);
  for (size_t r = 0; r < count; r++) {
    d.labels.push_back(p[r * kRecord]);
    std::memcpy(&d.images[at + r * kPixels], p + r * kRecord + 1, kPixels);
  }
  d.count += int64_t(count);
}

Dataset read_cifar_batches(const std::vector<std::string>& files, const std::string& name) {
  TB_CHECK(!files.empty(), "{}: no CIFAR batch files given", name);
  Dataset d = empty_cifar(
      name, files.size() == 1 ? files[0] : fs::path(files[0]).parent_path().string(), 10);
  for (const auto& f : files) {
    std::vector<uint8_t> bytes = read_file(f);
    append_cifar_records(bytes.data(), bytes.size(), f, d);
  }
  return d;
}

DatasetPair read_image_folder(const std::string& root, const std::vector<std::string>& given,
                              const std::string& name) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) fail("{}: image folder not found", root);
  for (const char* split : {"train", "test"})
    if (!fs::is_directory(fs::path(root) / split, ec))
      fail("{}/{}: missing (an image folder needs train/<class>/ and test/<class>/)", root, split);
  std::vector<ImageJob> jobs[2];
  int classes = 0;
  try {
    fs::path r(root);
    std::vector<std::string> names =
        resolve_classes(list_subdirs(r / "train"), list_subdirs(r / "test"), given, root);
    classes = int(names.size());
    for (int s = 0; s < 2; s++) {
      for (int c = 0; c < classes; c++) {
        fs::path dir = r / (s ? "test" : "train") / names[c];
        std::vector<std::string> files;
        for (const auto& e : fs::directory_iterator(dir)) {
          std::string n = e.path().filename().string();
          if (is_image_name(n) && e.is_regular_file()) files.push_back(e.path().string());
        }
        if (files.empty()) fail("{}: empty class folder (no .jpg/.jpeg/.png images)", dir.string());
        std::sort(files.begin(), files.end());
        for (auto& f : files) jobs[s].push_back({std::move(f), nullptr, uint8_t(c)});
      }
    }
  } catch (const fs::filesystem_error& e) {
    fail("{}: cannot list: {}", root, e.what());
  }
  DatasetPair out;
  out.train = decode_jobs(jobs[0], name, root, classes);
  out.test = decode_jobs(jobs[1], name, root, classes);
  return out;
}

std::vector<std::string> cifar10_default_paths() {
  std::vector<std::string> out = {"data/cifar10"};
  if (const char* env = std::getenv("TRAINBENCH_DATA"); env && *env)
    out.push_back((fs::path(env) / "cifar10").string());
  return out;
}

DatasetPair load_cifar10(const std::string& path_arg) {
  std::string path = path_arg;
  std::error_code ec;
  if (path.empty()) {
    std::vector<std::string> tried = cifar10_default_paths();
    for (const auto& p : tried)
      if (fs::exists(p, ec)) {
        path = p;
        break;
      }
    if (path.empty())
      fail(
          "cifar10: no data in {}{}; {}", join(tried, " or "),
          tried.size() < 2 ? " and TRAINBENCH_DATA is not set (else $TRAINBENCH_DATA/cifar10)" : "",
          kHowTo);
  }
  auto st = fs::status(path, ec);
  if (!fs::exists(st)) fail("cifar10: {} not found; {}", path, kHowTo);
  DatasetPair out;
  try {
    out = fs::is_directory(st) ? load_dir(path, 0) : load_tar(path);
  } catch (const fs::filesystem_error& e) {
    fail("cifar10: {}: {}", path, e.what());
  }
  out.train.name = out.test.name = "cifar10";
  out.train.source = out.test.source = path;
  return out;
}

void write_cifar_binary(const DatasetPair& d, const std::string& out_dir) {
  check_writable(d.train, "train", kBatches);
  check_writable(d.test, "test", 1);
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) fail("{}: cannot create directory: {}", out_dir, ec.message());
  const int64_t n = d.train.count;
  for (int b = 0; b < kBatches; b++)
    write_batch((fs::path(out_dir) / batch_name(b)).string(), d.train, n * b / kBatches,
                n * (b + 1) / kBatches);
  write_batch((fs::path(out_dir) / batch_name(kBatches)).string(), d.test, 0, d.test.count);
  // The official archive ships the class names too; the readers here do not need them.
  std::string meta = join(cifar10_classes(), "\n") + "\n";
  write_atomic((fs::path(out_dir) / "batches.meta.txt").string(),
               [&](FILE* f) { return std::fwrite(meta.data(), 1, meta.size(), f) == meta.size(); });
}

}  // namespace tb
