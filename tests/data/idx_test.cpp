#include "data/idx.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "data_test_util.h"

namespace tb {
namespace {

using testing::TempDir;
using testing::write_gz;
using testing::write_raw;

// An IDX file: big-endian magic and dims, then the data.
std::vector<uint8_t> idx_bytes(uint32_t magic, std::vector<uint32_t> dims,
                               const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out;
  auto put = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(v >> s));
  };
  put(magic);
  for (uint32_t d : dims) put(d);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<uint8_t> pixels(size_t n) {
  std::vector<uint8_t> p(n);
  for (size_t i = 0; i < n; i++) p[i] = uint8_t(i * 7 + 3);
  return p;
}

// 3 images of 4x5 and their labels, valid unless a test breaks one of them.
struct IdxFiles {
  TempDir dir;
  std::string images = dir / "images-idx3-ubyte.gz", labels = dir / "labels-idx1-ubyte.gz";
  IdxFiles() {
    write_gz(images, idx_bytes(0x803, {3, 4, 5}, pixels(60)));
    write_gz(labels, idx_bytes(0x801, {3}, {0, 9, 4}));
  }
  Dataset read() { return read_idx(images, labels, "test-set", 10); }
};

TEST(IdxTest, ReadsGzipFiles) {
  IdxFiles f;
  Dataset d = f.read();
  EXPECT_EQ(d.name, "test-set");
  EXPECT_EQ(d.source, f.images);
  EXPECT_EQ(d.count, 3);
  EXPECT_EQ(d.channels, 1);
  EXPECT_EQ(d.height, 4);
  EXPECT_EQ(d.width, 5);
  EXPECT_EQ(d.classes, 10);
  EXPECT_EQ(d.images, pixels(60));
  EXPECT_EQ(d.labels, (std::vector<uint8_t>{0, 9, 4}));
}

TEST(IdxTest, ReadsPlainFiles) {
  IdxFiles f;
  write_raw(f.images, idx_bytes(0x803, {3, 4, 5}, pixels(60)));
  write_raw(f.labels, idx_bytes(0x801, {3}, {1, 2, 3}));
  Dataset d = f.read();
  EXPECT_EQ(d.images, pixels(60));
  EXPECT_EQ(d.labels, (std::vector<uint8_t>{1, 2, 3}));
}

TEST(IdxTest, WriteReadRoundTrip) {
  TempDir dir;
  Dataset d;
  d.count = 2, d.channels = 1, d.height = 3, d.width = 2, d.classes = 5;
  d.images = pixels(12);
  d.labels = {4, 0};
  write_idx(d, dir / "i.gz", dir / "l.gz");
  Dataset r = read_idx(dir / "i.gz", dir / "l.gz", "rt", 5);
  EXPECT_EQ(r.count, 2);
  EXPECT_EQ(r.height, 3);
  EXPECT_EQ(r.width, 2);
  EXPECT_EQ(r.images, d.images);
  EXPECT_EQ(r.labels, d.labels);
  EXPECT_FALSE(std::filesystem::exists(dir / "i.gz.tmp"));
}

TEST(IdxTest, WrongMagicNamesFile) {
  IdxFiles f;
  write_gz(f.images, idx_bytes(0x12345678, {3, 4, 5}, pixels(60)));
  EXPECT_TB_ERROR(f.read(), f.images, "magic 0x12345678");
}

TEST(IdxTest, LabelsPassedAsImagesSaysDimensions) {
  IdxFiles f;
  EXPECT_TB_ERROR(read_idx(f.labels, f.labels, "x", 10), f.labels, "1 dimension(s), expected 3");
}

TEST(IdxTest, WrongElementType) {
  IdxFiles f;
  write_gz(f.labels, idx_bytes(0x0d01, {3}, {0, 0, 0}));  // float labels
  EXPECT_TB_ERROR(f.read(), f.labels, "element type is 0x0d");
}

TEST(IdxTest, NotGzipNotIdx) {
  IdxFiles f;
  std::string text = "this is some text, neither gzip nor IDX\n";
  write_raw(f.images, std::vector<uint8_t>(text.begin(), text.end()));
  EXPECT_TB_ERROR(f.read(), f.images, "not an IDX file and not gzip-compressed");
}

TEST(IdxTest, EmptyFile) {
  IdxFiles f;
  write_raw(f.labels, {});
  EXPECT_TB_ERROR(f.read(), f.labels, "too short");
}

TEST(IdxTest, TruncatedImages) {
  IdxFiles f;
  write_gz(f.images, idx_bytes(0x803, {3, 4, 5}, pixels(59)));
  EXPECT_TB_ERROR(f.read(), f.images, "truncated", "60");
}

TEST(IdxTest, TruncatedHeader) {
  IdxFiles f;
  write_gz(f.images, idx_bytes(0x803, {3}, {}));
  EXPECT_TB_ERROR(f.read(), f.images, "header cut off");
}

TEST(IdxTest, TruncatedLabels) {
  IdxFiles f;
  write_gz(f.labels, idx_bytes(0x801, {3}, {1, 2}));
  EXPECT_TB_ERROR(f.read(), f.labels, "truncated");
}

TEST(IdxTest, TrailingBytes) {
  IdxFiles f;
  write_gz(f.images, idx_bytes(0x803, {3, 4, 5}, pixels(62)));
  EXPECT_TB_ERROR(f.read(), f.images, "2 trailing bytes");
}

TEST(IdxTest, CutOffGzipStream) {
  IdxFiles f;
  write_gz(f.images, idx_bytes(0x803, {3, 4, 5}, pixels(60)));
  auto size = std::filesystem::file_size(f.images);
  std::filesystem::resize_file(f.images, size - 12);  // lose part of the deflate data + trailer
  EXPECT_TB_ERROR(f.read(), f.images);
}

TEST(IdxTest, CountsDisagree) {
  IdxFiles f;
  write_gz(f.labels, idx_bytes(0x801, {2}, {1, 2}));
  EXPECT_TB_ERROR(f.read(), f.labels, f.images, "2 labels", "3 images");
}

TEST(IdxTest, LabelOutOfRangeNamesIndex) {
  IdxFiles f;
  write_gz(f.labels, idx_bytes(0x801, {3}, {1, 2, 10}));
  EXPECT_TB_ERROR(f.read(), f.labels, "label 10 at index 2");
}

TEST(IdxTest, ZeroDimension) {
  IdxFiles f;
  write_gz(f.images, idx_bytes(0x803, {3, 0, 5}, {}));
  EXPECT_TB_ERROR(f.read(), f.images, "zero");
}

TEST(IdxTest, ImplausibleDimensions) {
  IdxFiles f;
  write_gz(f.images, idx_bytes(0x803, {3, 100000, 5}, pixels(60)));
  EXPECT_TB_ERROR(f.read(), f.images, "implausibly large");
}

TEST(IdxTest, HugeCountWithoutDataFailsFast) {
  IdxFiles f;  // 2^31-1 images of 28x28 = 1.6 TB declared, 60 bytes present
  write_gz(f.images, idx_bytes(0x803, {0x7fffffff, 28, 28}, pixels(60)));
  EXPECT_TB_ERROR(f.read(), f.images);
}

// A header that declares more than the file can hold is refused before anything is allocated
// for it: 2^31 images of 1x1 (within the plausibility bounds) in a gzip file of a few dozen bytes,
// which deflate cannot expand past 1032 times; and a plain file one byte short.
TEST(IdxTest, DeclaredSizeBeyondTheFileRefusedBeforeAllocating) {
  IdxFiles f;
  write_gz(f.images, idx_bytes(0x803, {0x80000000u, 1, 1}, pixels(60)));
  EXPECT_TB_ERROR(f.read(), f.images, "truncated", "2147483648 data bytes", "can hold at most");
  write_raw(f.images, idx_bytes(0x803, {3, 4, 5}, pixels(59)));
  EXPECT_TB_ERROR(f.read(), f.images, "truncated", "60 data bytes", "can hold at most 59");
}

TEST(IdxTest, MissingFile) {
  IdxFiles f;
  std::filesystem::remove(f.labels);
  EXPECT_TB_ERROR(f.read(), f.labels, "not found");
}

TEST(IdxTest, DirectoryInsteadOfFile) {
  IdxFiles f;
  EXPECT_TB_ERROR(read_idx(f.dir.path.string(), f.labels, "x", 10), f.dir.path.string(),
                  "directory");
}

TEST(IdxTest, FashionMnistMissingDirSaysHowToGetIt) {
  TempDir dir;
  std::string missing = dir / "nope";
  EXPECT_TB_ERROR(load_fashion_mnist(missing), missing, "apt-get install dataset-fashion-mnist",
                  "--data");
}

TEST(IdxTest, FashionMnistMissingOneFile) {
  TempDir dir;
  EXPECT_TB_ERROR(load_fashion_mnist(dir.path.string()), "train-images-idx3-ubyte.gz", "not found");
}

// A folder of unpacked files (the IDX files as their authors distribute them, gunzipped) loads
// as the .gz ones do; a folder with both reads the .gz.
TEST(IdxTest, FashionMnistUnpackedFiles) {
  TempDir dir;
  write_raw(dir / "train-images-idx3-ubyte", idx_bytes(0x803, {3, 4, 5}, pixels(60)));
  write_raw(dir / "train-labels-idx1-ubyte", idx_bytes(0x801, {3}, {1, 2, 3}));
  write_raw(dir / "t10k-images-idx3-ubyte", idx_bytes(0x803, {2, 4, 5}, pixels(40)));
  write_gz(dir / "t10k-labels-idx1-ubyte.gz", idx_bytes(0x801, {2}, {7, 8}));
  write_raw(dir / "t10k-labels-idx1-ubyte", idx_bytes(0x801, {2}, {5, 5}));
  DatasetPair d = load_fashion_mnist(dir.path.string());
  EXPECT_EQ(d.train.source, (dir / "train-images-idx3-ubyte"));
  EXPECT_EQ(d.train.images, pixels(60));
  EXPECT_EQ(d.train.labels, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(d.test.count, 2);
  EXPECT_EQ(d.test.labels, (std::vector<uint8_t>{7, 8}));
}

TEST(IdxTest, RealFashionMnist) {
  if (!std::filesystem::is_directory(kFashionMnistDir))
    GTEST_SKIP() << kFashionMnistDir << " not installed (apt-get install dataset-fashion-mnist)";
  auto t0 = std::chrono::steady_clock::now();
  DatasetPair d = load_fashion_mnist();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(d.train.count, 60000);
  EXPECT_EQ(d.test.count, 10000);
  for (const Dataset* s : {&d.train, &d.test}) {
    EXPECT_EQ(s->height, 28);
    EXPECT_EQ(s->width, 28);
    EXPECT_EQ(s->channels, 1);
    EXPECT_EQ(s->images.size(), size_t(s->count) * 28 * 28);
    std::vector<int64_t> per_class(10);
    for (uint8_t l : s->labels) {
      ASSERT_LT(l, 10);
      per_class[l]++;
    }
    for (int64_t c : per_class) EXPECT_EQ(c, s->count / 10);  // Fashion-MNIST is balanced
  }
  std::printf("Fashion-MNIST: read 70000 images in %.2f s\n", s);
}

}  // namespace
}  // namespace tb
