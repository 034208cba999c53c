#include "data/cifar.h"

#include <gtest/gtest.h>
#include <jpeglib.h>
#include <png.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "data/tar.h"
#include "data_test_util.h"
#include "tar_header.h"

namespace fs = std::filesystem;

namespace tb {
namespace {

using testing::TempDir;
using testing::write_gz;
using testing::write_raw;

constexpr int kPixels = 3 * 32 * 32;

// A smooth HWC test image (JPEG keeps smooth images close), different per seed.
std::vector<uint8_t> smooth_image(int w, int h, int channels, int seed) {
  std::vector<uint8_t> px(size_t(w) * h * channels);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < channels; c++)
        px[(size_t(y) * w + x) * channels + c] =
            uint8_t((20 + x * 2 + y * 3 + c * 30 + seed * 5) % 256);
  return px;
}

std::vector<uint8_t> to_chw(const std::vector<uint8_t>& hwc, int channels_in) {
  std::vector<uint8_t> chw(kPixels);
  for (int p = 0; p < 32 * 32; p++)
    for (int c = 0; c < 3; c++) chw[c * 1024 + p] = hwc[p * channels_in + c];
  return chw;
}

std::vector<uint8_t> encode_jpeg(int w, int h, int channels, const std::vector<uint8_t>& px) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = w;
  c.image_height = h;
  c.input_components = channels;
  c.in_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 95, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(&px[size_t(c.next_scanline) * w * channels]);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  std::vector<uint8_t> out(buf, buf + size);
  std::free(buf);
  jpeg_destroy_compress(&c);
  return out;
}

// color_type: PNG_COLOR_TYPE_RGB, _RGB_ALPHA or _GRAY; px has the matching channels.
std::vector<uint8_t> encode_png(int w, int h, int color_type, const std::vector<uint8_t>& px) {
  int channels = color_type == PNG_COLOR_TYPE_RGB ? 3 : color_type == PNG_COLOR_TYPE_GRAY ? 1 : 4;
  std::vector<uint8_t> out;
  png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(p);
  png_set_write_fn(
      p, &out,
      [](png_structp p, png_bytep d, size_t n) {
        auto* o = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(p));
        o->insert(o->end(), d, d + n);
      },
      nullptr);
  png_set_IHDR(p, info, w, h, 8, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(p, info);
  for (int y = 0; y < h; y++) png_write_row(p, &px[size_t(y) * w * channels]);
  png_write_end(p, nullptr);
  png_destroy_write_struct(&p, &info);
  return out;
}

std::vector<uint8_t> png32(int seed) {
  return encode_png(32, 32, PNG_COLOR_TYPE_RGB, smooth_image(32, 32, 3, seed));
}

// --- a minimal tar writer (ustar headers, GNU long names, pax path records) ---

using testing::tar_header;

struct TarWriter {
  std::vector<uint8_t> bytes;
  void raw(const std::string& name, const std::vector<uint8_t>& data, char type,
           const std::string& link = "") {
    auto h = tar_header(name, data.size(), type, link);
    bytes.insert(bytes.end(), h.begin(), h.end());
    bytes.insert(bytes.end(), data.begin(), data.end());
    bytes.resize((bytes.size() + 511) / 512 * 512, 0);
  }
  void dir(const std::string& name) { raw(name, {}, '5'); }
  void hard_link(const std::string& name, const std::string& target) { raw(name, {}, '1', target); }
  void file(const std::string& name, const std::vector<uint8_t>& data) {
    if (name.size() > 100) {  // GNU: a ././@LongLink member carries the full name
      std::vector<uint8_t> n(name.begin(), name.end());
      n.push_back(0);
      raw("././@LongLink", n, 'L');
    }
    raw(name, data, '0');
  }
  void pax_file(const std::string& name, const std::vector<uint8_t>& data) {
    std::string body = " path=" + name + "\n";
    size_t len = body.size() + 1;
    while (std::to_string(len).size() + body.size() != len) len++;
    std::string rec = std::to_string(len) + body;
    raw("PaxHeaders/x", std::vector<uint8_t>(rec.begin(), rec.end()), 'x');
    raw("truncated-name", data, '0');
  }
  void finish(const std::string& path) {
    bytes.resize(bytes.size() + 1024, 0);
    write_gz(path, bytes);
  }
};

// --- CIFAR binary ---

DatasetPair tiny_pair(int train, int test) {
  DatasetPair d;
  for (auto [s, n] : {std::pair{&d.train, train}, std::pair{&d.test, test}}) {
    s->name = "cifar10";
    s->count = n, s->channels = 3, s->height = 32, s->width = 32, s->classes = 10;
    for (int i = 0; i < n; i++) {
      s->labels.push_back(uint8_t((i * 3 + n) % 10));
      auto chw = to_chw(smooth_image(32, 32, 3, i + n), 3);
      s->images.insert(s->images.end(), chw.begin(), chw.end());
    }
  }
  return d;
}

std::vector<uint8_t> record(uint8_t label, uint8_t fill) {
  std::vector<uint8_t> r(1 + kPixels, fill);
  r[0] = label;
  return r;
}

std::vector<uint8_t> records(int n) {
  std::vector<uint8_t> out;
  for (int i = 0; i < n; i++) {
    auto r = record(uint8_t(i % 10), uint8_t(i));
    out.insert(out.end(), r.begin(), r.end());
  }
  return out;
}

void expect_same(const Dataset& got, const Dataset& want) {
  EXPECT_EQ(got.count, want.count);
  EXPECT_EQ(got.channels, 3);
  EXPECT_EQ(got.height, 32);
  EXPECT_EQ(got.width, 32);
  EXPECT_EQ(got.classes, 10);
  EXPECT_EQ(got.name, "cifar10");
  EXPECT_EQ(got.labels, want.labels);
  EXPECT_TRUE(got.images == want.images);
}

TEST(CifarTest, BinaryWriteReadRoundTrip) {
  TempDir dir;
  DatasetPair d = tiny_pair(12, 3);
  std::string bin = dir / "cifar-10-batches-bin";
  write_cifar_binary(d, bin);
  // 12 split evenly over 5 batches: 2, 2, 3, 2, 3.
  int64_t total = 0;
  for (int b = 1; b <= 5; b++) {
    auto size = fs::file_size(fs::path(bin) / ("data_batch_" + std::to_string(b) + ".bin"));
    EXPECT_EQ(size % 3073, 0u);
    EXPECT_GE(size / 3073, 2u);
    total += size / 3073;
  }
  EXPECT_EQ(total, 12);
  EXPECT_EQ(fs::file_size(fs::path(bin) / "test_batch.bin"), 3u * 3073);
  EXPECT_TRUE(fs::exists(fs::path(bin) / "batches.meta.txt"));
  for (const auto& e : fs::directory_iterator(bin))
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
  for (const std::string& p : {dir.path.string(), bin}) {  // the parent dir, or the folder itself
    DatasetPair r = load_cifar10(p);
    expect_same(r.train, d.train);
    expect_same(r.test, d.test);
    EXPECT_EQ(r.train.source, p);
  }
}

TEST(CifarTest, WriteRejectsBadInput) {
  TempDir dir;
  DatasetPair d = tiny_pair(6, 2);
  d.train.labels[4] = 10;
  EXPECT_TB_ERROR(write_cifar_binary(d, dir / "out"), "label 10 at index 4");
  d = tiny_pair(4, 2);
  EXPECT_TB_ERROR(write_cifar_binary(d, dir / "out"), "at least 5");
  d = tiny_pair(6, 2);
  d.test.height = 28;
  EXPECT_TB_ERROR(write_cifar_binary(d, dir / "out"), "expected 3x32x32");
}

TEST(CifarTest, ReadBatchesConcatenates) {
  TempDir dir;
  write_raw(dir / "a.bin", records(3));
  write_raw(dir / "b.bin", records(2));
  Dataset d = read_cifar_batches({dir / "a.bin", dir / "b.bin"}, "cifar10");
  EXPECT_EQ(d.count, 5);
  EXPECT_EQ(d.labels, (std::vector<uint8_t>{0, 1, 2, 0, 1}));
  EXPECT_EQ(d.images[2 * kPixels + 100], 2);
  EXPECT_EQ(d.images.size(), 5u * kPixels);
}

TEST(CifarTest, ShortRecordNamesFile) {
  TempDir dir;
  auto bytes = records(2);
  bytes.pop_back();
  write_raw(dir / "data_batch_1.bin", bytes);
  EXPECT_TB_ERROR(read_cifar_batches({dir / "data_batch_1.bin"}, "cifar10"),
                  dir / "data_batch_1.bin", "record 1 is short by 1 bytes");
}

TEST(CifarTest, LabelAbove9NamesFileAndRecord) {
  TempDir dir;
  auto bytes = records(3);
  bytes[2 * 3073] = 10;
  write_raw(dir / "test_batch.bin", bytes);
  EXPECT_TB_ERROR(read_cifar_batches({dir / "test_batch.bin"}, "cifar10"), dir / "test_batch.bin",
                  "record 2 has label 10");
}

TEST(CifarTest, EmptyBatchFile) {
  TempDir dir;
  write_raw(dir / "data_batch_1.bin", {});
  EXPECT_TB_ERROR(read_cifar_batches({dir / "data_batch_1.bin"}, "cifar10"), "data_batch_1.bin",
                  "empty");
}

TEST(CifarTest, MissingBatchNamesIt) {
  TempDir dir;
  write_cifar_binary(tiny_pair(5, 1), dir / "cifar-10-batches-bin");
  fs::remove(fs::path(dir / "cifar-10-batches-bin") / "data_batch_3.bin");
  EXPECT_TB_ERROR(load_cifar10(dir.path.string()), "data_batch_3.bin", "missing");
}

TEST(CifarTest, MissingPathSaysWhereToPutIt) {
  TempDir dir;
  std::string p = dir / "nothing-here";
  EXPECT_TB_ERROR(load_cifar10(p), p, "not found", "cifar-10-batches-bin", ".tar.gz", "--data",
                  "trainbench data");
}

TEST(CifarTest, EmptyDirSaysWhatItExpects) {
  TempDir dir;
  EXPECT_TB_ERROR(load_cifar10(dir.path.string()), dir.path.string(), "no CIFAR-10 data",
                  "cifar-10-batches-bin");
}

TEST(CifarTest, DefaultPaths) {
  TempDir dir;
  fs::path old_cwd = fs::current_path();
  const char* old_env = std::getenv("TRAINBENCH_DATA");
  std::string saved_env = old_env ? old_env : "";
  fs::create_directories(dir.path / "cwd");
  fs::current_path(dir.path / "cwd");
  ::unsetenv("TRAINBENCH_DATA");
  EXPECT_EQ(cifar10_default_paths(), std::vector<std::string>{"data/cifar10"});
  EXPECT_TB_ERROR(load_cifar10(), "data/cifar10", "$TRAINBENCH_DATA/cifar10", "--data",
                  "trainbench data");
  ::setenv("TRAINBENCH_DATA", (dir / "shared").c_str(), 1);
  write_cifar_binary(tiny_pair(5, 2), (dir.path / "shared/cifar10/cifar-10-batches-bin").string());
  EXPECT_EQ(load_cifar10().test.count, 2);
  write_cifar_binary(tiny_pair(7, 1), "data/cifar10");  // data/cifar10 wins over the env path
  EXPECT_EQ(load_cifar10().train.count, 7);
  fs::current_path(old_cwd);
  if (old_env)
    ::setenv("TRAINBENCH_DATA", saved_env.c_str(), 1);
  else
    ::unsetenv("TRAINBENCH_DATA");
}

TEST(CifarTest, TarGzOfBinaryLayout) {
  TempDir dir;
  DatasetPair d = tiny_pair(10, 4);
  write_cifar_binary(d, dir / "cifar-10-batches-bin");
  TarWriter tar;
  tar.dir("cifar-10-batches-bin/");
  for (const auto& e : fs::directory_iterator(dir / "cifar-10-batches-bin")) {
    std::ifstream f(e.path(), std::ios::binary);
    std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), {});
    tar.file("cifar-10-batches-bin/" + e.path().filename().string(), data);
  }
  tar.finish(dir / "cifar-10-binary.tar.gz");
  DatasetPair r = load_cifar10(dir / "cifar-10-binary.tar.gz");
  expect_same(r.train, d.train);
  expect_same(r.test, d.test);
}

// Image folder in a .tar.gz with a top folder, directory entries, a GNU long name and a pax name.
TEST(CifarTest, TarGzOfImageFolderRoundTrip) {
  TempDir dir;
  TarWriter tar;
  tar.dir("./cifar10-jpeg/");
  Dataset want_train, want_test;
  int seed = 0;
  for (int c = 0; c < 10; c++) {
    const std::string& cls = cifar10_classes()[c];
    for (const char* split : {"train", "test"}) {
      bool train = split[1] == 'r';
      for (int i = 0; i < (train ? 2 : 1); i++, seed++) {
        std::string name =
            "./cifar10-jpeg/" + std::string(split) + "/" + cls + "/" + std::to_string(i) + ".png";
        if (c == 3 && train && i == 1)  // "cat", sorts after "0.png" as "1.png" would
          name = "./cifar10-jpeg/train/cat/1" + std::string(120, 'x') + ".png";
        auto png = png32(seed);
        if (c == 5 && train && i == 0)
          tar.pax_file(name, png);
        else
          tar.file(name, png);
        Dataset& w = train ? want_train : want_test;
        w.labels.push_back(uint8_t(c));
        auto chw = to_chw(smooth_image(32, 32, 3, seed), 3);
        w.images.insert(w.images.end(), chw.begin(), chw.end());
      }
    }
  }
  tar.file("cifar10-jpeg/README.txt", {'h', 'i'});  // not an image: ignored
  tar.finish(dir / "cifar10-jpeg.tar.gz");

  auto members = read_tar(dir / "cifar10-jpeg.tar.gz");
  EXPECT_EQ(members.size(), 31u);
  EXPECT_EQ(members[0].path.rfind("cifar10-jpeg/", 0), 0u);  // leading ./ removed

  DatasetPair r = load_cifar10(dir / "cifar10-jpeg.tar.gz");
  EXPECT_EQ(r.train.count, 20);
  EXPECT_EQ(r.test.count, 10);
  EXPECT_EQ(r.train.labels, want_train.labels);
  EXPECT_EQ(r.test.labels, want_test.labels);
  EXPECT_TRUE(r.train.images == want_train.images);
  EXPECT_TRUE(r.test.images == want_test.images);
  EXPECT_EQ(r.train.classes, 10);

  // The same archive found inside a data directory.
  fs::create_directories(dir.path / "data");
  fs::rename(dir / "cifar10-jpeg.tar.gz", dir.path / "data/cifar10-jpeg.tar.gz");
  EXPECT_EQ(load_cifar10((dir.path / "data").string()).train.count, 20);
}

TEST(CifarTest, TarHardLinksAndSymlinks) {
  TempDir dir;
  TarWriter tar;
  tar.file("./a/x.png", png32(0));
  tar.hard_link("a/y.png", "./a/x.png");  // GNU tar's form of a second copy of a file
  tar.raw("a/z.png", {}, '2', "x.png");   // symlinks are skipped
  tar.finish(dir / "links.tar.gz");
  auto m = read_tar(dir / "links.tar.gz");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[1].path, "a/y.png");
  EXPECT_EQ(*m[1].data, png32(0));

  TarWriter bad;
  bad.hard_link("a/y.png", "a/nothing.png");
  bad.finish(dir / "bad.tar.gz");
  EXPECT_TB_ERROR(read_tar(dir / "bad.tar.gz"), dir / "bad.tar.gz", "a/nothing.png");
}

// Hard links share their target's bytes: a .tar.gz of 1,000 links to a 1 MB member (a few KB)
// holds 1 MB, where copies took 1 GB (tests/fuzz/corpus/tar/crash-hard-links: 4 GB from 10 KB).
TEST(CifarTest, TarHardLinksShareTheirTargetsBytes) {
  TempDir dir;
  TarWriter tar;
  tar.file("big.bin", std::vector<uint8_t>(1 << 20, 7));
  for (int i = 0; i < 1000; i++) tar.hard_link("link" + std::to_string(i), "big.bin");
  tar.finish(dir / "links.tar.gz");
  const std::vector<TarMember> m = read_tar(dir / "links.tar.gz");
  ASSERT_EQ(m.size(), 1001u);
  EXPECT_EQ(m[1000].path, "link999");
  for (const TarMember& link : m) ASSERT_EQ(link.data.get(), m[0].data.get()) << link.path;
}

// A member whose header claims more than the rest of the archive can hold (4 GB in a .tar.gz
// of a few hundred bytes) is refused before anything is allocated for it.
TEST(CifarTest, TarMemberBeyondTheArchiveRefusedBeforeAllocating) {
  TempDir dir;
  TarWriter tar;
  const std::vector<uint8_t> h = tar_header("big.bin", uint64_t(4) << 30, '0');
  tar.bytes.insert(tar.bytes.end(), h.begin(), h.end());
  tar.finish(dir / "big.tar.gz");
  EXPECT_TB_ERROR(read_tar(dir / "big.tar.gz"), dir / "big.tar.gz", "big.bin",
                  "4294967296 bytes declared, at most");
}

// An empty GNU long name (an 'L' member of 0 bytes) leaves the next member its own name; reading
// it passed a null pointer to strnlen, which the sanitizers' build reports.
TEST(CifarTest, TarEmptyLongName) {
  TempDir dir;
  TarWriter tar;
  tar.raw("././@LongLink", {}, 'L');
  tar.file("short.bin", {1, 2, 3});
  tar.finish(dir / "empty-name.tar.gz");
  const std::vector<TarMember> m = read_tar(dir / "empty-name.tar.gz");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].path, "short.bin");
  EXPECT_EQ(*m[0].data, std::vector<uint8_t>({1, 2, 3}));
}

// A name with a newline (tar allows one) still makes a one-line message: EXPECT_TB_ERROR checks.
TEST(CifarTest, TarNamesWithControlCharactersStayOneLine) {
  TempDir dir;
  TarWriter tar;
  tar.hard_link("a\nb\x1b.png", "missing.png");
  tar.finish(dir / "names.tar.gz");
  EXPECT_TB_ERROR(read_tar(dir / "names.tar.gz"), "a\\nb\\x1b.png", "missing.png");
}

TEST(CifarTest, TarBadChecksum) {
  TempDir dir;
  TarWriter tar;
  tar.file("train/cat/0.png", png32(0));
  size_t second = tar.bytes.size();
  tar.file("test/cat/0.png", png32(1));
  tar.bytes[second + 5] ^= 1;  // a byte of the second header's name
  tar.finish(dir / "x.tar.gz");
  EXPECT_TB_ERROR(read_tar(dir / "x.tar.gz"), dir / "x.tar.gz", "checksum");
}

TEST(CifarTest, TarCutOff) {
  TempDir dir;
  TarWriter tar;
  tar.file("train/cat/0.png", png32(0));
  write_gz(dir / "x.tar.gz", std::vector<uint8_t>(tar.bytes.begin(), tar.bytes.end() - 600));
  EXPECT_TB_ERROR(read_tar(dir / "x.tar.gz"), dir / "x.tar.gz", "cut off");
  write_gz(dir / "y.tar.gz", tar.bytes);  // no end-of-archive block
  EXPECT_TB_ERROR(read_tar(dir / "y.tar.gz"), dir / "y.tar.gz", "end-of-archive");
}

TEST(CifarTest, NotATarArchive) {
  TempDir dir;
  write_gz(dir / "x.tar.gz", std::vector<uint8_t>(2048, 'a'));
  EXPECT_TB_ERROR(load_cifar10(dir / "x.tar.gz"), dir / "x.tar.gz", "not a tar archive");
}

TEST(CifarTest, TarWithoutData) {
  TempDir dir;
  TarWriter tar;
  tar.file("docs/readme.txt", {'x'});
  tar.finish(dir / "x.tar.gz");
  EXPECT_TB_ERROR(load_cifar10(dir / "x.tar.gz"), dir / "x.tar.gz", "neither");
}

TEST(CifarTest, TarImageFolderMissingClass) {
  TempDir dir;
  TarWriter tar;
  for (const auto& cls : cifar10_classes())
    if (cls != "ship") {
      tar.file("r/train/" + cls + "/0.png", png32(0));
      tar.file("r/test/" + cls + "/0.png", png32(0));
    }
  tar.finish(dir / "x.tar.gz");
  EXPECT_TB_ERROR(load_cifar10(dir / "x.tar.gz"), dir / "x.tar.gz", "train/ship");
}

TEST(CifarTest, TarUndecodableMemberNamed) {
  TempDir dir;
  TarWriter tar;
  for (const auto& cls : cifar10_classes()) {
    tar.file("train/" + cls + "/0.png", png32(0));
    tar.file("test/" + cls + "/0.jpg", cls == "dog" ? std::vector<uint8_t>(500, 7) : png32(1));
  }
  tar.finish(dir / "x.tar.gz");
  EXPECT_TB_ERROR(load_cifar10(dir / "x.tar.gz"), dir / "x.tar.gz", "test/dog/0.jpg",
                  "not a JPEG or PNG");
}

// Real data: the shared 60000-JPEG archive, only where this checkout has it next to it.
TEST(CifarTest, RealCifar10JpegTarGz) {
  std::string path = std::string(TRAINBENCH_SOURCE_DIR) + "/../shared/data/cifar10-jpeg.tar.gz";
  if (!fs::exists(path)) GTEST_SKIP() << path << " not present";
  auto t0 = std::chrono::steady_clock::now();
  DatasetPair d = load_cifar10(path);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("cifar10-jpeg.tar.gz: read and decoded 60000 JPEGs in %.2f s\n", s);
  EXPECT_EQ(d.train.count, 50000);
  EXPECT_EQ(d.test.count, 10000);
  for (const Dataset* x : {&d.train, &d.test}) {
    EXPECT_EQ(x->images.size(), size_t(x->count) * kPixels);
    std::vector<int64_t> per_class(10);
    for (uint8_t l : x->labels) {
      ASSERT_LT(l, 10);
      per_class[l]++;
    }
    for (int64_t c : per_class) EXPECT_EQ(c, x->count / 10);
    double mean = 0;
    for (uint8_t v : x->images) mean += v;
    mean /= double(x->images.size());
    EXPECT_GT(mean, 100);  // CIFAR-10's mean pixel is about 120
    EXPECT_LT(mean, 140);
  }
}

// --- image folders on disk ---

// root/{train,test}/<class>/ with `n` PNGs per class.
void make_folder(const TempDir& dir, const std::vector<std::string>& classes, int n) {
  int seed = 0;
  for (const char* split : {"train", "test"})
    for (const auto& c : classes)
      for (int i = 0; i < n; i++, seed++)
        write_raw(dir / (std::string(split) + "/" + c + "/" + std::to_string(i) + ".png"),
                  png32(seed));
}

TEST(ImageFolderTest, ReadsPngAndJpegSortedClasses) {
  TempDir dir;
  auto a = smooth_image(32, 32, 3, 1), b = smooth_image(32, 32, 4, 2),
       c = smooth_image(32, 32, 3, 3);
  write_raw(dir / "train/zebra/x.png", encode_png(32, 32, PNG_COLOR_TYPE_RGB, a));
  write_raw(dir / "train/apple/y.PNG", encode_png(32, 32, PNG_COLOR_TYPE_RGB_ALPHA, b));
  write_raw(dir / "train/apple/z.jpg", encode_jpeg(32, 32, 3, c));
  write_raw(dir / "train/apple/.hidden.jpg", {1, 2, 3});  // ignored
  write_raw(dir / "train/apple/notes.txt", {1, 2, 3});    // ignored
  write_raw(dir / "test/zebra/x.jpeg", encode_jpeg(32, 32, 3, c));
  write_raw(dir / "test/apple/x.png", encode_png(32, 32, PNG_COLOR_TYPE_RGB, a));
  DatasetPair d = read_image_folder(dir.path.string(), {}, "fruit");
  EXPECT_EQ(d.train.name, "fruit");
  EXPECT_EQ(d.train.classes, 2);
  ASSERT_EQ(d.train.count, 3);
  ASSERT_EQ(d.test.count, 2);
  EXPECT_EQ(d.train.labels, (std::vector<uint8_t>{0, 0, 1}));  // apple: y.PNG, z.jpg; zebra
  EXPECT_EQ(d.test.labels, (std::vector<uint8_t>{0, 1}));
  auto img = [](const Dataset& d, int i) {
    return std::vector<uint8_t>(d.images.begin() + i * kPixels,
                                d.images.begin() + (i + 1) * kPixels);
  };
  EXPECT_EQ(img(d.train, 0), to_chw(b, 4));  // alpha dropped, RGB exact
  EXPECT_EQ(img(d.train, 2), to_chw(a, 3));
  EXPECT_EQ(img(d.test, 0), to_chw(a, 3));
  // JPEG is lossy: close, not exact.
  auto want = to_chw(c, 3), got = img(d.train, 1);
  double err = 0;
  for (int i = 0; i < kPixels; i++) err += std::abs(int(got[i]) - int(want[i]));
  EXPECT_LT(err / kPixels, 3.0);
}

TEST(ImageFolderTest, GivenClassListSetsLabels) {
  TempDir dir;
  make_folder(dir, {"a", "b", "c"}, 1);
  DatasetPair d = read_image_folder(dir.path.string(), {"c", "a", "b"}, "x");
  EXPECT_EQ(d.train.labels, (std::vector<uint8_t>{0, 1, 2}));
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {"a", "b"}, "x"), "train/c",
                  "unexpected class folder");
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {"a", "b", "c", "d"}, "x"), "train/d",
                  "missing");
}

TEST(ImageFolderTest, TestClassesMustMatchTrain) {
  TempDir dir;
  make_folder(dir, {"a", "b"}, 1);
  write_raw(dir / "test/q/0.png", png32(0));
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {}, "x"), "test/q", "unexpected");
}

TEST(ImageFolderTest, EmptyClassFolder) {
  TempDir dir;
  make_folder(dir, {"a", "b"}, 1);
  fs::create_directories(dir.path / "train/c");
  fs::create_directories(dir.path / "test/c");
  write_raw(dir / "train/c/readme.txt", {1});
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {}, "x"), "train/c", "empty class folder");
}

TEST(ImageFolderTest, MissingSplit) {
  TempDir dir;
  write_raw(dir / "train/a/0.png", png32(0));
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {}, "x"), "test", "missing");
}

TEST(ImageFolderTest, WrongSizePng) {
  TempDir dir;
  make_folder(dir, {"a", "b"}, 3);
  write_raw(dir / "train/b/1.png",
            encode_png(28, 32, PNG_COLOR_TYPE_RGB, smooth_image(28, 32, 3, 0)));
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {}, "x"), "train/b/1.png",
                  "28x32 pixels, expected 32x32");
}

TEST(ImageFolderTest, WrongSizeJpeg) {
  TempDir dir;
  make_folder(dir, {"a", "b"}, 3);
  write_raw(dir / "test/a/2.jpg", encode_jpeg(64, 64, 3, smooth_image(64, 64, 3, 0)));
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {}, "x"), "test/a/2.jpg",
                  "64x64 pixels, expected 32x32");
}

TEST(ImageFolderTest, GrayscaleJpeg) {
  TempDir dir;
  make_folder(dir, {"a", "b"}, 2);
  write_raw(dir / "train/a/g.jpg", encode_jpeg(32, 32, 1, smooth_image(32, 32, 1, 0)));
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {}, "x"), "train/a/g.jpg", "grayscale");
}

TEST(ImageFolderTest, GrayscalePng) {
  TempDir dir;
  make_folder(dir, {"a", "b"}, 2);
  write_raw(dir / "test/b/g.png",
            encode_png(32, 32, PNG_COLOR_TYPE_GRAY, smooth_image(32, 32, 1, 0)));
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {}, "x"), "test/b/g.png", "grayscale");
}

TEST(ImageFolderTest, UndecodableJpeg) {
  TempDir dir;
  make_folder(dir, {"a", "b"}, 2);
  std::vector<uint8_t> garbage(700);
  for (size_t i = 0; i < garbage.size(); i++) garbage[i] = uint8_t(i * 31 + 7);
  write_raw(dir / "train/a/bad.jpg", garbage);
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {}, "x"), "train/a/bad.jpg",
                  "not a JPEG or PNG");
  // A JPEG signature followed by garbage reaches libjpeg, whose error must not kill the process.
  garbage[0] = 0xff, garbage[1] = 0xd8, garbage[2] = 0xff;
  write_raw(dir / "train/a/bad.jpg", garbage);
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {}, "x"), "train/a/bad.jpg",
                  "cannot decode JPEG");
}

TEST(ImageFolderTest, TruncatedJpegAndPng) {
  TempDir dir;
  make_folder(dir, {"a", "b"}, 2);
  auto jpg = encode_jpeg(32, 32, 3, smooth_image(32, 32, 3, 0));
  jpg.resize(jpg.size() / 2);
  write_raw(dir / "train/b/cut.jpg", jpg);
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {}, "x"), "train/b/cut.jpg",
                  "cannot decode JPEG");
  fs::remove(dir / "train/b/cut.jpg");
  auto png = png32(0);
  png.resize(png.size() / 2);
  write_raw(dir / "train/b/cut.png", png);
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {}, "x"), "train/b/cut.png",
                  "cannot decode PNG");
}

// A chunk whose length field says 1.7 GB: libpng allocated the length before reading it, which
// the fuzzer found as an out-of-memory. It must be refused before libpng sees it.
TEST(ImageFolderTest, PngChunkLongerThanTheFileRefusedBeforeAllocating) {
  TempDir dir;
  make_folder(dir, {"a", "b"}, 2);
  std::vector<uint8_t> png = png32(0);
  const uint8_t chunk[] = {0x67, 0x00, 0x00, 0x00, 's', 'P', 'L', 'T', 'p', 'a', 'l', 0, 8};
  png.insert(png.begin() + 33, chunk, chunk + sizeof chunk);  // after the signature and IHDR
  write_raw(dir / "train/a/big.png", png);
  EXPECT_TB_ERROR(read_image_folder(dir.path.string(), {}, "x"), "train/a/big.png",
                  "cannot decode PNG", "chunk at byte 33 declares 1728053248 bytes");
}

TEST(ImageFolderTest, LoadCifar10FromFolder) {
  TempDir dir;
  make_folder(dir, cifar10_classes(), 1);
  DatasetPair d = load_cifar10(dir.path.string());
  EXPECT_EQ(d.train.count, 10);
  EXPECT_EQ(d.test.count, 10);
  EXPECT_EQ(d.train.classes, 10);
  EXPECT_EQ(d.train.name, "cifar10");
  EXPECT_EQ(d.test.labels, (std::vector<uint8_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  // Converting to the binary layout keeps every byte.
  write_cifar_binary(d, dir / "bin");
  DatasetPair r = load_cifar10(dir / "bin");
  EXPECT_EQ(r.train.labels, d.train.labels);
  EXPECT_TRUE(r.train.images == d.train.images);
  EXPECT_TRUE(r.test.images == d.test.images);
}

TEST(ImageFolderTest, LoadCifar10RejectsOtherClasses) {
  TempDir dir;
  make_folder(dir, {"cat", "dog"}, 1);
  EXPECT_TB_ERROR(load_cifar10(dir.path.string()), "airplane", "missing");
}

}  // namespace
}  // namespace tb
