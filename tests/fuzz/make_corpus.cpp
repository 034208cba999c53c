// Writes the fuzz targets' seed corpus: small valid inputs of every reader, made with the
// project's own writers where it has them, so the fuzzers start from inside each format.
//
//   build-fuzz/tests/fuzz/make_fuzz_corpus tests/fuzz/corpus
//
// Files are named seed-*; crash-* files (inputs that once broke a reader) are left alone.
#include <zlib.h>

#include <cstddef>
#include <cstdio>
// jpeglib.h uses size_t and FILE without including their headers.
#include <jpeglib.h>
#include <png.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../data/tar_header.h"
#include "data/cifar.h"
#include "data/idx.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;
using nlohmann::json;
using Bytes = std::vector<uint8_t>;

namespace {

fs::path g_out;

void put(const std::string& target, const std::string& name, const Bytes& bytes) {
  const fs::path dir = g_out / target;
  fs::create_directories(dir);
  std::ofstream f(dir / ("seed-" + name), std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "cannot write %s/%s\n", dir.c_str(), name.c_str());
    std::exit(1);
  }
}

Bytes text_bytes(const std::string& s) {
  return Bytes(s.begin(), s.end());
}

Bytes slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

Bytes gzip(const Bytes& plain, int level = 6) {
  const fs::path tmp = fs::temp_directory_path() / ("tb_corpus_" + std::to_string(getpid()));
  gzFile f = gzopen(tmp.c_str(), ("wb" + std::to_string(level)).c_str());
  if (!plain.empty()) gzwrite(f, plain.data(), unsigned(plain.size()));
  gzclose(f);
  Bytes out = slurp(tmp);
  fs::remove(tmp);
  return out;
}

// The first byte of a target's input that says what the target does to the rest (see the target).
Bytes mode(uint8_t m, const Bytes& rest) {
  Bytes out = {m};
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// --- images ---

Bytes pixels(int w, int h, int channels, int seed) {
  Bytes px(size_t(w) * h * channels);
  for (size_t i = 0; i < px.size(); i++) px[i] = uint8_t(i * 7 + seed * 31);
  return px;
}

Bytes solid(int w, int h, int channels, uint8_t value) {
  return Bytes(size_t(w) * h * channels, value);
}

Bytes encode_jpeg(int w, int h, int channels, const Bytes& px, bool progressive) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = w, c.image_height = h, c.input_components = channels;
  c.in_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 75, TRUE);
  if (progressive) jpeg_simple_progression(&c);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(&px[size_t(c.next_scanline) * w * channels]);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  Bytes out(buf, buf + size);
  std::free(buf);
  jpeg_destroy_compress(&c);
  return out;
}

// px holds rows of w samples of `channels` each, at `depth` bits (16: big-endian pairs).
Bytes encode_png(int w, int h, int color_type, int depth, bool interlaced, const Bytes& px) {
  const int channels = color_type == PNG_COLOR_TYPE_RGB          ? 3
                       : color_type == PNG_COLOR_TYPE_RGB_ALPHA  ? 4
                       : color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                                                                 : 1;
  const size_t row_bytes = size_t(w) * channels * depth / 8;
  Bytes out;
  png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(p);
  png_set_write_fn(
      p, &out,
      [](png_structp p, png_bytep d, size_t n) {
        auto* o = static_cast<Bytes*>(png_get_io_ptr(p));
        o->insert(o->end(), d, d + n);
      },
      nullptr);
  png_set_IHDR(p, info, w, h, depth, color_type,
               interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    png_color palette[16];
    for (int i = 0; i < 16; i++)
      palette[i] = {uint8_t(i * 16), uint8_t(255 - i * 16), uint8_t(i * 5)};
    png_set_PLTE(p, info, palette, 16);
  }
  png_write_info(p, info);
  std::vector<png_bytep> rows(h);
  for (int y = 0; y < h; y++) rows[y] = const_cast<uint8_t*>(&px[y * row_bytes]);
  png_write_image(p, rows.data());
  png_write_end(p, nullptr);
  png_destroy_write_struct(&p, &info);
  return out;
}

Bytes png_rgb(int w, int h, int seed) {
  return encode_png(w, h, PNG_COLOR_TYPE_RGB, 8, false, pixels(w, h, 3, seed));
}

// PNG seeds ask fuzz_image to rewrite their chunks' CRCs (mode 1); JPEGs have none (mode 0).
void put_image(const std::string& name, const Bytes& bytes) {
  put("image", name, mode(name.ends_with(".png") ? 1 : 0, bytes));
}

void image_seeds() {
  put_image("rgb.png", png_rgb(32, 32, 1));
  put_image("rgba.png",
            encode_png(32, 32, PNG_COLOR_TYPE_RGB_ALPHA, 8, false, pixels(32, 32, 4, 2)));
  Bytes indices(32 * 32 / 2);  // 4-bit palette indices, two a byte
  for (size_t i = 0; i < indices.size(); i++) indices[i] = uint8_t(i * 37);
  put_image("palette.png", encode_png(32, 32, PNG_COLOR_TYPE_PALETTE, 4, false, indices));
  put_image("rgb16.png", encode_png(32, 32, PNG_COLOR_TYPE_RGB, 16, false, pixels(32, 64, 3, 3)));
  put_image("interlaced.png",
            encode_png(32, 32, PNG_COLOR_TYPE_RGB, 8, true, pixels(32, 32, 3, 4)));
  put_image("gray.png", encode_png(32, 32, PNG_COLOR_TYPE_GRAY, 8, false, pixels(32, 32, 1, 5)));
  put_image("small.png", png_rgb(8, 4, 6));
  put_image("rgb.jpg", encode_jpeg(32, 32, 3, pixels(32, 32, 3, 7), false));
  put_image("progressive.jpg", encode_jpeg(32, 32, 3, pixels(32, 32, 3, 8), true));
  put_image("gray.jpg", encode_jpeg(32, 32, 1, pixels(32, 32, 1, 9), false));
  put_image("small.jpg", encode_jpeg(16, 8, 3, pixels(16, 8, 3, 10), false));
}

// --- IDX: a little-endian u16 n, n bytes of the labels file, then the images file ---

Bytes idx_pair(const Bytes& labels, const Bytes& images) {
  Bytes out = {uint8_t(labels.size()), uint8_t(labels.size() >> 8)};
  out.insert(out.end(), labels.begin(), labels.end());
  out.insert(out.end(), images.begin(), images.end());
  return out;
}

// Big-endian magic and dims, then the data.
Bytes idx_plain(uint32_t magic, const std::vector<uint32_t>& dims, const Bytes& data) {
  Bytes out;
  auto be32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(v >> s));
  };
  be32(magic);
  for (uint32_t v : dims) be32(v);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void idx_seeds() {
  // Gzip'd by write_idx itself, as load_fashion_mnist reads them.
  tb::Dataset d;
  d.count = 3, d.channels = 1, d.height = 4, d.width = 5, d.classes = 10;
  d.images = pixels(5, 12, 1, 1), d.labels = {0, 9, 4};
  const fs::path dir = fs::temp_directory_path() / ("tb_corpus_idx_" + std::to_string(getpid()));
  fs::create_directories(dir);
  tb::write_idx(d, (dir / "i.gz").string(), (dir / "l.gz").string());
  put("idx", "gzip", idx_pair(slurp(dir / "l.gz"), slurp(dir / "i.gz")));
  fs::remove_all(dir);
  put("idx", "plain",
      idx_pair(idx_plain(0x801, {2}, {1, 7}), idx_plain(0x803, {2, 3, 3}, pixels(3, 6, 1, 2))));
  put("idx", "mixed",
      idx_pair(gzip(idx_plain(0x801, {1}, {5})),
               idx_plain(0x803, {1, 28, 28}, pixels(28, 28, 1, 3))));
}

// --- CIFAR-10 batch records: a label byte, then 3072 pixel bytes ---

Bytes cifar_records(int n) {
  Bytes out;
  for (int r = 0; r < n; r++) {
    out.push_back(uint8_t(r % 10));
    Bytes px = pixels(32, 32, 3, r);
    out.insert(out.end(), px.begin(), px.end());
  }
  return out;
}

// --- tar: ustar headers, GNU long names and base-256 sizes, pax records, links ---

using tb::testing::tar_header;

struct Tar {
  Bytes bytes;
  void member(const std::string& name, const Bytes& data, char type = '0',
              const std::string& link = "", bool base256 = false) {
    Bytes h = tar_header(name, data.size(), type, link, base256);
    bytes.insert(bytes.end(), h.begin(), h.end());
    bytes.insert(bytes.end(), data.begin(), data.end());
    bytes.resize((bytes.size() + 511) / 512 * 512, 0);
  }
  Bytes finish() const {
    Bytes out = bytes;
    out.resize(out.size() + 1024, 0);
    return out;
  }
};

void tar_seeds() {
  Tar binary;
  binary.member("cifar-10-batches-bin/", {}, '5');
  for (const char* f : {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                        "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"})
    binary.member(std::string("cifar-10-batches-bin/") + f, cifar_records(1));
  // Mode 0: the bytes as they are; 1: checksums rewritten; 3: that, then gzip'd (fuzz_tar).
  put("tar", "binary.tar.gz", mode(0, gzip(binary.finish())));

  // One solid 32x32 image per class and split, PNG for train, JPEG for test.
  Tar folder;
  const Bytes png = encode_png(32, 32, PNG_COLOR_TYPE_RGB, 8, false, solid(32, 32, 3, 90));
  const Bytes jpg = encode_jpeg(32, 32, 3, solid(32, 32, 3, 140), false);
  for (const std::string& c : tb::cifar10_classes()) {
    folder.member("cifar10/train/" + c + "/0.png", png);
    folder.member("cifar10/test/" + c + "/0.jpg", jpg);
  }
  put("tar", "folder.tar.gz", mode(0, gzip(folder.finish())));

  Tar features;
  features.member("dir/", {}, '5');
  const std::string long_name = "dir/" + std::string(120, 'n') + ".bin";
  Bytes name_bytes = text_bytes(long_name);
  name_bytes.push_back(0);
  features.member("././@LongLink", name_bytes, 'L');
  features.member("short-name", text_bytes("long-named member\n"));
  const std::string rec = " path=dir/pax-named.txt\n";
  features.member("PaxHeaders/x", text_bytes(std::to_string(rec.size() + 2) + rec), 'x');
  features.member("pax-placeholder", text_bytes("pax-named member\n"));
  features.member("./dir/base256.txt", text_bytes("size in base-256\n"), '0', "", true);
  features.member("dir/hard", {}, '1', "dir/base256.txt");
  features.member("dir/sym", {}, '2', "dir/base256.txt");
  features.member("global", text_bytes("17 comment=hello\n"), 'g');
  put("tar", "features.tar", mode(1, features.finish()));
  put("tar", "features-gzipped.tar", mode(3, features.finish()));
  put("tar", "features.tar.gz", mode(0, gzip(features.finish())));
}

// --- gzip: zlib's reading of gzip and plain bytes ---

void gzip_seeds() {
  const Bytes text = text_bytes("trainbench reads gzip and plain files alike\n");
  put("gzip", "plain", text);
  put("gzip", "one-member.gz", gzip(text));
  put("gzip", "stored.gz", gzip(text, 0));
  put("gzip", "two-members.gz", concat({gzip(text), gzip(text_bytes("second member\n"))}));
  put("gzip", "trailing-garbage.gz", concat({gzip(text), text_bytes("garbage")}));
  put("gzip", "empty.gz", gzip({}));
  put("gzip", "zeros.gz", gzip(Bytes(4096, 0), 9));
}

// --- checkpoints, written by write_checkpoint ---

// Each checkpoint twice: the file as written (mode 0), and its header, a \0, then its arrays
// (mode 1), which fuzz_checkpoint frames itself.
void put_checkpoint(const std::string& name, const tb::Checkpoint& c) {
  const fs::path tmp = fs::temp_directory_path() / ("tb_corpus_" + std::to_string(getpid()));
  tb::write_checkpoint(tmp.string(), c);
  const Bytes file = slurp(tmp);
  fs::remove(tmp);
  put("checkpoint", name + ".tbck", mode(0, file));
  uint64_t header_len;
  std::memcpy(&header_len, &file[8], 8);
  Bytes parts(file.begin() + 16, file.begin() + 16 + ptrdiff_t(header_len));
  parts.push_back(0);
  parts.insert(parts.end(), file.begin() + 16 + ptrdiff_t(header_len), file.end() - 4);
  put("checkpoint", name + ".parts", mode(1, parts));
}

void checkpoint_seeds() {
  tb::Checkpoint c;
  c.workload = "fashion-mlp", c.device = "cpu-onednn";
  c.hyper = {{"batch", 16}, {"seed", 1}, {"augment", false}, {"optimizer", "adam"}};
  c.param_count = 3, c.state_count = 2, c.train_count = 32, c.epochs_done = 1;
  c.shuffle_rng = "1 2 3";
  tb::EpochResult e;
  e.seconds = 0.5, e.loss = 1.25, e.accuracy = 0.5, e.steps = 2, e.images = 32;
  c.epochs = {e};
  c.updates = 2;
  c.params = {1, 2, 3}, c.opt_m = {4, 5, 6}, c.opt_v = {7, 8, 9}, c.state = {0.5f, -1};
  put_checkpoint("epoch-end", c);
  c.epoch_so_far = {1, 16, 0.25, NAN, 3};  // stopped inside epoch 2, a NaN loss so far
  c.epochs[0].loss = NAN;
  put_checkpoint("mid-epoch", c);
  c = tb::Checkpoint();
  c.workload = "x", c.hyper = json::object(), c.shuffle_rng = "";
  put_checkpoint("empty", c);
}

// --- result records and profiles, as `trainbench compare` reads them; \0 separates files ---

json made_up_record(const std::string& device, double seconds) {
  json timeline = json::array();
  const char* phases[] = {"load", "train", "train", "test"};
  for (int i = 0; i < 4; ++i)
    timeline.push_back({{"t", 0.5 * (i + 1)},
                        {"phase", phases[i]},
                        {"cpu_busy_pct", 20.0 + 10 * i},
                        {"proc_cpu_pct", 15.0 + 10 * i},
                        {"gpu_busy_pct", 10.0 * i}});
  return {{"trainbench_version", "0.1.0"},
          {"workload", "fashion-mlp"},
          {"device", {{"kind", "cuda"}, {"name", device}, {"backend", "cuda"}}},
          {"precision", "tf32"},
          {"batch", 32},
          {"epochs", 10},
          {"steps", 18750},
          {"resumed_epochs", 2},
          {"interrupted", true},
          {"hyper", {{"augment", false}}},
          {"times_s", {{"train", seconds * 0.9}, {"test", seconds * 0.1}, {"train_test", seconds}}},
          {"throughput", {{"train_images_per_s_steady", 60000 * 10 / seconds}}},
          {"accuracy", {{"train", 0.9}, {"test", 0.88}}},
          {"loss", {{"epochs", {0.5, 0.4, nullptr}}, {"test", 0.33}}},
          {"flops",
           {{"per_train_image", 409088.0}, {"peak_datasheet_per_s", nullptr}, {"mfu", nullptr}}},
          {"utilisation",
           {{"mean", {{"by_phase", {{"train", {{"proc_cpu_pct", 35.5}, {"gpu_busy_pct", 61.0}}}}}}},
            {"timeline", timeline}}}};
}

json made_up_profile() {
  json layers = json::array();
  for (const char* op : {"dense", "relu", "dense"})
    layers.push_back({{"name", op},
                      {"op", op},
                      {"shape", "32x784"},
                      {"forward_ms", 0.125},
                      {"backward_ms", 0.25},
                      {"flops_forward", 1e6},
                      {"flops_backward", 2e6},
                      {"bytes", 4096},
                      {"share", 0.3},
                      {"roofline_share", 0.01},
                      {"bound", "memory"}});
  return {{"workload", "fashion-mlp"},
          {"device", "GPU A"},
          {"precision", "fp32"},
          {"batch", 32},
          {"steps", 10},
          {"step_ms", 1.5},
          {"peak_flops_per_s", 1e13},
          {"layers", layers},
          {"other", {{"data", {{"what", "cut"}, {"ms", 0.1}, {"share", 0.05}}}}}};
}

// A repository record with its utilisation timeline cut to a few samples.
json trimmed(const fs::path& file) {
  std::ifstream in(file);
  json j = json::parse(in);
  if (j.contains("utilisation") && j["utilisation"].contains("timeline")) {
    json& tl = j["utilisation"]["timeline"];
    if (tl.size() > 4) tl.erase(tl.begin() + 4, tl.end());
  }
  for (const char* big : {"machine", "versions", "algorithms", "command"}) j.erase(big);
  return j;
}

Bytes docs(std::initializer_list<json> files) {
  Bytes out;
  for (const json& j : files) {
    if (!out.empty()) out.push_back(0);
    const std::string s = j.dump(1);
    out.insert(out.end(), s.begin(), s.end());
  }
  return out;
}

void record_seeds(const fs::path& source) {
  // Small ones first: byte mutations reach a key's value far more often in 300 bytes than in 7000.
  put("record", "small.json",
      docs({{{"workload", "w"},
             {"times_s", {{"train_test", 1}}},
             {"kind", "run"},
             {"interrupted", false},
             {"resumed_epochs", 1},
             {"resumed_steps", 2},
             {"device", {{"kind", "cuda"}, {"name", "H100"}}},
             {"precision", "bf16"},
             {"flops", {{"mfu", 0.1}, {"peak_datasheet_per_s", 1e12}}},
             {"loss", {{"epochs", {1, 2}}}},
             {"utilisation",
              {{"mean", {{"proc_cpu_pct", 3}}},
               {"timeline",
                {{{"t", 1}, {"phase", "train"}, {"proc_cpu_pct", 5}},
                 {{"t", 2}, {"gpu_busy_pct", 3}}}}}}}}));
  const json small_profile = {{"workload", "w"},
                              {"layers", {{{"name", "a"}, {"op", "dense"}, {"forward_ms", 1}}}},
                              {"batch", 3},
                              {"threads", 2},
                              {"other", {{"loss", {{"ms", 1}}}}}};
  put("record", "small-peer.json",
      docs({{{"workload", "w"},
             {"times_s", {{"train_test", 2}}},
             {"peer", "pytorch"},
             {"batch", 32},
             {"profile", small_profile}},
            small_profile}));
  const json a = made_up_record("GPU A", 10), b = made_up_record("GPU B", 20);
  put("record", "one.json", docs({a}));
  put("record", "two.json", docs({a, b}));
  put("record", "with-profile.json", docs({a, made_up_profile()}));
  json other = b;
  other["workload"] = "resnet50-cifar10", other["batch"] = 128;
  put("record", "two-workloads.json", docs({a, other}));
  const fs::path results = source / "bench/results";
  put("record", "cpu-pair.json",
      docs({trimmed(results / "cpu-fashion-mlp-2026-11-27/trainbench.json"),
            trimmed(results / "cpu-fashion-mlp-2026-11-27/pytorch.json")}));
  put("record", "h100.json",
      docs({trimmed(results / "h100-2026-11-27/trainbench_fashion_mlp_cuda_fp32.json")}));
  put("record", "evaluation.json",
      slurp(results / "cpu-resnet50-accuracy-2026-12-02/eval-bf16s0-test-fp32.json"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s OUT_DIR SOURCE_DIR (e.g. tests/fuzz/corpus .)\n", argv[0]);
    return 2;
  }
  g_out = argv[1];
  image_seeds();
  idx_seeds();
  put("cifar", "one-record.bin", cifar_records(1));
  put("cifar", "three-records.bin", cifar_records(3));
  tar_seeds();
  gzip_seeds();
  checkpoint_seeds();
  record_seeds(argv[2]);
  std::printf("seeds written under %s\n", argv[1]);
  return 0;
}
