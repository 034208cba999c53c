// The CUDA backend against the reference, op by op. Random inputs (never all zeros; a fixed seed
// per op), the reference backend on the host, the CUDA backend on the GPU with every output
// poisoned with NaN first (an element the GPU never writes fails), compared by relative norm:
// 1e-5 for fp32 (which also proves fp32 did not run on TF32 tensor cores), 3e-3 for tf32.
// Without a GPU every GPU test skips and says why; the no-GPU error path is tested instead.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../models/tiny_resnet.h"
#include "../test_util.h"
#include "../train/parameter_moves.h"
#include "../train/synthetic_data.h"
#include "backends/backend.h"
#include "core/error.h"
#include "ops/add.h"
#include "ops/relu.h"
#include "ops/softmax_ce.h"
#include "train/checkpoint.h"
#include "train/executor.h"
#include "train/runner.h"
#include "train/workload.h"

#ifdef TRAINBENCH_HAVE_CUDA
#include "backends/cuda/cublaslt.h"
#include "backends/cuda/cuda_info.h"
#endif

namespace tb {
// gtest finds PrintTo by argument-dependent lookup, so these sit in tb beside the types.
void PrintTo(const BnDims& d, std::ostream* os) {
  *os << "n" << d.n << "_c" << d.c << "_hw" << d.hw;
}
void PrintTo(const PoolDims& d, std::ostream* os) {
  *os << d.h << "x" << d.w << "_k" << d.kernel << "s" << d.stride << "p" << d.pad;
}

namespace {

#ifndef TRAINBENCH_HAVE_CUDA

TEST(CudaBackend, NotBuiltSaysSo) {
  BackendConfig cfg;
  cfg.device = DeviceKind::cuda;
  try {
    make_backend(cfg);
    FAIL() << "make_backend(cuda) should throw in a build without CUDA";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
  }
  GTEST_SKIP() << "CUDA backend not built (no nvcc at configure time): GPU op tests skipped";
}

#else

constexpr double kTolFp32 = 1e-5;
constexpr double kTolTf32 = 3e-3;
// bf16 operands keep 8 bits of mantissa: each rounds by up to 2^-9 (2e-3) relative, and a product
// summed in fp32 over random signs lands a few 1e-3 from the exact result; 1e-2 is the issue's
// bound and still fails a wrong tap, sign or scale by orders of magnitude.
constexpr double kTolBf16 = 1e-2;
double tolerance(Precision p) {
  return p == Precision::fp32 ? kTolFp32 : p == Precision::tf32 ? kTolTf32 : kTolBf16;
}
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- host data ----
std::vector<float> randv(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) {
    x = u(rng);
    if (x == 0.f) x = 0.5f * (lo + hi) + 1e-3f;
  }
  return v;
}

using testing::rel_err;

// ---- device buffers ----
struct DBuf {
  Backend* b = nullptr;
  void* p = nullptr;
  size_t bytes = 0;
  DBuf(Backend& be, size_t n) : b(&be), bytes(n) { p = be.alloc(be.ctx, n); }
  DBuf(DBuf&& o) noexcept : b(o.b), p(o.p), bytes(o.bytes) { o.p = nullptr; }
  DBuf(const DBuf&) = delete;
  ~DBuf() {
    if (p) b->free(b->ctx, p);
  }
  float* f(size_t offset = 0) const { return static_cast<float*>(p) + offset; }
  int32_t* i32() const { return static_cast<int32_t*>(p); }
  uint8_t* u8() const { return static_cast<uint8_t*>(p); }
  StepCursor* cursor() const { return static_cast<StepCursor*>(p); }
};

template <typename T>
DBuf up(Backend& g, const std::vector<T>& v) {
  DBuf d(g, v.size() * sizeof(T));
  g.upload(g.ctx, d.p, v.data(), v.size() * sizeof(T));
  return d;
}
template <typename T = float>
std::vector<T> down(Backend& g, const void* p, size_t n) {
  std::vector<T> v(n);
  g.download(g.ctx, v.data(), p, n * sizeof(T));
  return v;
}
DBuf poisoned(Backend& g, size_t n) {
  DBuf d(g, n * sizeof(float));
  g.fill(g.ctx, d.f(), kNaN, int64_t(n));
  return d;
}

// nhwc: bf16 convolutions on channels-last copies (BackendConfig::bf16_nhwc).
std::unique_ptr<Backend> make_gpu(Precision p, bool nhwc = false) {
  BackendConfig cfg;
  cfg.device = DeviceKind::cuda;
  cfg.precision = p;
  cfg.cuda.bf16_nhwc = nhwc;
  return make_backend(cfg);
}

const char* pname(Precision p) {
  return precision_name(p);
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU: " << cuda_unavailable_reason();
    ref_ = make_reference_backend(BackendConfig{});
    gpu_ = make_gpu(Precision::fp32);
  }
  Backend& ref() { return *ref_; }
  Backend& gpu() { return *gpu_; }
  std::unique_ptr<Backend> ref_, gpu_;
};

// ---------------------------------------------------------------------------------------------
// Backend basics
// ---------------------------------------------------------------------------------------------

TEST(CudaBackend, DeviceCountNeverThrows) {
  int n = -1;
  EXPECT_NO_THROW(n = cuda_device_count());
  EXPECT_GE(n, 0);
  EXPECT_EQ(cuda_devices().size(), size_t(n));
  if (n == 0) {
    EXPECT_FALSE(cuda_unavailable_reason().empty());
  }
}

TEST(CudaBackend, VersionStrings) {
  EXPECT_EQ(cuda_version_str(13000), "13.0");
  EXPECT_EQ(cuda_version_str(12080), "12.8");
  EXPECT_EQ(cudnn_version_str(91900), "9.19.0");
  EXPECT_EQ(cudnn_version_str(8907), "8.9.7");
  EXPECT_EQ(nccl_version_str(22809), "2.28.9");
  EXPECT_EQ(nccl_version_str(2804), "2.8.4");
  EXPECT_EQ(nccl_version_str(0), "none");
}

// cuBLASLt is loaded when the backend first needs it, never at start (its set-up costs ~200 MB
// and 0.4 s): the loader brings no libcublasLt into a trainbench that only prints its help. Then
// it loads here too, without a GPU, and is the version the headers name.
TEST(CudaBackend, CublasLtLoadsOnlyWhenUsed) {
  // The device scripts carry the test binary without the build tree: there, only the load.
  if (std::filesystem::exists(TRAINBENCH_BINARY)) {
    const std::string cmd = "LD_DEBUG=libs " + std::string(TRAINBENCH_BINARY) + " --help 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string loaded;
    std::array<char, 4096> buf;
    for (size_t k; (k = fread(buf.data(), 1, buf.size(), p)) > 0;) loaded.append(buf.data(), k);
    pclose(p);
    ASSERT_NE(loaded.find("libcudart"), std::string::npos) << "LD_DEBUG printed no loads:\n"
                                                           << loaded;
    EXPECT_EQ(loaded.find("libcublasLt"), std::string::npos) << "loaded at start";
  }
  const int64_t v = cuda::cublaslt_version();
  ASSERT_GT(v, 0) << "cuBLASLt did not load";
  EXPECT_EQ(v / 10000, CUBLAS_VER_MAJOR);
  EXPECT_EQ(&cuda::cublaslt(), &cuda::cublaslt());  // loaded once
}

TEST(CudaBackend, NoGpuThrowsClearError) {
  if (cuda_device_count() > 0)
    GTEST_SKIP() << "this machine has a CUDA GPU; the no-GPU path is not reachable";
  BackendConfig cfg;
  cfg.device = DeviceKind::cuda;
  try {
    make_backend(cfg);
    FAIL() << "make_backend(cuda) without a GPU should throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA GPU"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_cuda_backend(cfg), Error);
}

TEST_F(CudaOps, DeviceInfo) {
  auto devs = cuda_devices();
  ASSERT_FALSE(devs.empty());
  EXPECT_FALSE(devs[0].name.empty());
  EXPECT_GT(devs[0].total_memory_bytes, 0);
  EXPECT_GT(devs[0].sm_count, 0);
  EXPECT_GT(devs[0].cudnn_version, 0);
  EXPECT_EQ(gpu().name, "cuda");
}

TEST_F(CudaOps, MemoryRoundTripAndZeroFill) {
  auto h = randv(1000, 1);
  DBuf a = up(gpu(), h);
  DBuf b(gpu(), h.size() * 4);
  EXPECT_EQ(down(gpu(), b.p, h.size()), std::vector<float>(h.size(), 0.f));  // alloc zero-fills
  gpu().copy(gpu().ctx, b.p, a.p, h.size() * 4);
  EXPECT_EQ(down(gpu(), b.p, h.size()), h);
  gpu().fill(gpu().ctx, b.f(1), 2.5f, 997);  // misaligned start, odd count
  auto got = down(gpu(), b.p, h.size());
  EXPECT_EQ(got[0], h[0]);
  for (size_t i = 1; i < 998; ++i) ASSERT_EQ(got[i], 2.5f) << i;
  EXPECT_EQ(got[998], h[998]);
  gpu().synchronize(gpu().ctx);
}

TEST_F(CudaOps, OutOfMemoryNamesBytesAndSuggestsBatch) {
  try {
    gpu().alloc(gpu().ctx, size_t(1) << 50);
    FAIL() << "a 1 PiB allocation should fail";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("out of GPU memory"), std::string::npos) << m;
    EXPECT_NE(m.find("--batch"), std::string::npos) << m;
    EXPECT_NE(m.find("free"), std::string::npos) << m;
  }
  // the backend still works afterwards
  auto h = randv(10, 2);
  DBuf a = up(gpu(), h);
  EXPECT_EQ(down(gpu(), a.p, 10), h);
}

// ---------------------------------------------------------------------------------------------
// dense
// ---------------------------------------------------------------------------------------------

struct DenseCase {
  int64_t n, in, out;
};
void PrintTo(const DenseCase& c, std::ostream* os) {
  *os << "n" << c.n << "_in" << c.in << "_out" << c.out;
}

class CudaDense : public CudaOps, public ::testing::WithParamInterface<DenseCase> {};

TEST_P(CudaDense, ForwardAndBackward) {
  const DenseCase dc = GetParam();
  const DenseDims d{dc.n, dc.in, dc.out};
  const uint32_t seed = uint32_t(100 + dc.n * 7 + dc.in * 3 + dc.out);
  auto x = randv(d.n * d.in, seed), w = randv(d.out * d.in, seed + 1, -0.2f, 0.2f),
       b = randv(d.out, seed + 2), dy = randv(d.n * d.out, seed + 3);
  for (Precision prec : {Precision::fp32, Precision::tf32, Precision::bf16}) {
    SCOPED_TRACE(pname(prec));
    auto g = make_gpu(prec);
    const double tol = tolerance(prec);
    DBuf gx = up(*g, x), gw = up(*g, w), gb = up(*g, b), gdy = up(*g, dy);
    OpCache cache;  // one node: forward and backward share it
    for (bool relu : {false, true})
      for (bool bias : {true, false}) {
        SCOPED_TRACE(std::string("relu ") + (relu ? "on" : "off") + ", bias " +
                     (bias ? "on" : "off"));
        std::vector<float> want(d.n * d.out);
        OpCache rc;
        ref().dense_forward(ref().ctx, rc, d, x.data(), w.data(), bias ? b.data() : nullptr,
                            want.data(), relu);
        for (int rep = 0; rep < 2; ++rep) {  // the second call runs the cached plan
          DBuf gy = poisoned(*g, d.n * d.out);
          g->dense_forward(g->ctx, cache, d, gx.f(), gw.f(), bias ? gb.f() : nullptr, gy.f(), relu);
          EXPECT_LE(rel_err(down(*g, gy.p, want.size()), want), tol) << "forward, call " << rep;
        }
      }
    // backward, full and without dx / db (the first layer; no bias)
    std::vector<float> wdx(d.n * d.in), wdw(d.out * d.in), wdb(d.out);
    OpCache rc;
    ref().dense_backward(ref().ctx, rc, d, x.data(), w.data(), dy.data(), wdx.data(), wdw.data(),
                         wdb.data());
    for (int variant = 0; variant < 3; ++variant) {
      SCOPED_TRACE("backward variant " + std::to_string(variant));
      const bool want_dx = variant != 1, want_db = variant != 2;
      DBuf gdx = poisoned(*g, wdx.size()), gdw = poisoned(*g, wdw.size()),
           gdb = poisoned(*g, wdb.size());
      g->dense_backward(g->ctx, cache, d, gx.f(), gw.f(), gdy.f(), want_dx ? gdx.f() : nullptr,
                        gdw.f(), want_db ? gdb.f() : nullptr);
      if (want_dx) {
        EXPECT_LE(rel_err(down(*g, gdx.p, wdx.size()), wdx), tol) << "dx";
      }
      EXPECT_LE(rel_err(down(*g, gdw.p, wdw.size()), wdw), tol) << "dw";
      if (want_db) {
        EXPECT_LE(rel_err(down(*g, gdb.p, wdb.size()), wdb), tol) << "db";
      }
    }
    // a less aligned weight pointer (an offset into a flat parameter array) on the same cache
    {
      DBuf gw1(*g, (w.size() + 1) * 4), gb1(*g, (b.size() + 1) * 4);
      g->upload(g->ctx, gw1.f(1), w.data(), w.size() * 4);
      g->upload(g->ctx, gb1.f(1), b.data(), b.size() * 4);
      std::vector<float> want(d.n * d.out);
      OpCache rc2;
      ref().dense_forward(ref().ctx, rc2, d, x.data(), w.data(), b.data(), want.data(), false);
      DBuf gy = poisoned(*g, want.size());
      g->dense_forward(g->ctx, cache, d, gx.f(), gw1.f(1), gb1.f(1), gy.f(), false);
      EXPECT_LE(rel_err(down(*g, gy.p, want.size()), want), tol) << "misaligned forward";
      DBuf gdw = poisoned(*g, wdw.size() + 1), gdb = poisoned(*g, wdb.size() + 1);
      g->dense_backward(g->ctx, cache, d, gx.f(), gw1.f(1), gdy.f(), nullptr, gdw.f(1), gdb.f(1));
      auto got_dw = down(*g, gdw.p, wdw.size() + 1);
      auto got_db = down(*g, gdb.p, wdb.size() + 1);
      EXPECT_LE(rel_err(std::vector<float>(got_dw.begin() + 1, got_dw.end()), wdw), tol)
          << "misaligned dw";
      EXPECT_LE(rel_err(std::vector<float>(got_db.begin() + 1, got_db.end()), wdb), tol)
          << "misaligned db";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaDense,
                         // bf16 runs bf16 where in and out are multiples of 8 (784x128,
                         // 64x24), tf32 elsewhere
                         ::testing::Values(DenseCase{32, 784, 128}, DenseCase{32, 128, 10},
                                           DenseCase{7, 33, 5}, DenseCase{16, 2048, 10},
                                           DenseCase{7, 64, 24}),
                         [](const auto& info) {
                           return "n" + std::to_string(info.param.n) + "_in" +
                                  std::to_string(info.param.in) + "_out" +
                                  std::to_string(info.param.out);
                         });

TEST_F(CudaOps, CacheRefusesAnotherShape) {
  const DenseDims d{8, 16, 4}, d2{4, 16, 4};
  auto x = randv(8 * 16, 7), w = randv(4 * 16, 8), b = randv(4, 9);
  DBuf gx = up(gpu(), x), gw = up(gpu(), w), gb = up(gpu(), b);
  DBuf gy(gpu(), 8 * 4 * 4);
  OpCache c;
  gpu().dense_forward(gpu().ctx, c, d, gx.f(), gw.f(), gb.f(), gy.f(), false);
  EXPECT_THROW(gpu().dense_forward(gpu().ctx, c, d2, gx.f(), gw.f(), gb.f(), gy.f(), false), Error);
}

// ---------------------------------------------------------------------------------------------
// conv2d
// ---------------------------------------------------------------------------------------------

struct ConvCase {
  const char* name;
  ConvDims d;
};
void PrintTo(const ConvCase& c, std::ostream* os) {
  *os << c.name;
}

class CudaConv : public CudaOps, public ::testing::WithParamInterface<ConvCase> {};

TEST_P(CudaConv, ForwardBackwardDataBackwardWeights) {
  const ConvDims d = GetParam().d;
  const uint32_t seed = uint32_t(300 + d.c * 5 + d.k * 3 + d.r * 11 + d.stride * 17 + d.n);
  const int64_t xs = d.n * d.c * d.h * d.w, ws = d.k * d.c * d.r * d.s,
                ys = d.n * d.k * d.oh() * d.ow();
  auto x = randv(xs, seed), w = randv(ws, seed + 1, -0.3f, 0.3f), dy = randv(ys, seed + 2);
  std::vector<float> wy(ys), wdx(xs), wdw(ws);
  OpCache rc;
  ref().conv2d_forward(ref().ctx, rc, d, x.data(), w.data(), wy.data());
  ref().conv2d_backward_data(ref().ctx, rc, d, dy.data(), w.data(), wdx.data());
  ref().conv2d_backward_weights(ref().ctx, rc, d, x.data(), dy.data(), wdw.data());
  const std::pair<Precision, bool> configs[] = {
      {Precision::fp32, false},
      {Precision::tf32, false},
      {Precision::bf16, false},
      {Precision::bf16, true}};  // bf16 on channels-last copies
  for (const auto& [prec, nhwc] : configs) {
    SCOPED_TRACE(std::string(pname(prec)) + (nhwc ? " nhwc" : ""));
    auto g = make_gpu(prec, nhwc);
    const double tol = tolerance(prec);
    DBuf gx = up(*g, x), gw = up(*g, w), gdy = up(*g, dy);
    OpCache cache;
    // The first call measures algorithms, the second reuses them. The second runs the backward
    // in the executor's order, weights then data, where bf16 reuses the weight gradient's copy
    // of dy for the data gradient (and both calls reuse the forward's copy of x).
    for (int rep = 0; rep < 2; ++rep) {
      SCOPED_TRACE("call " + std::to_string(rep));
      DBuf gy = poisoned(*g, ys), gdx = poisoned(*g, xs), gdw = poisoned(*g, ws);
      g->conv2d_forward(g->ctx, cache, d, gx.f(), gw.f(), gy.f());
      if (rep == 0) g->conv2d_backward_data(g->ctx, cache, d, gdy.f(), gw.f(), gdx.f());
      g->conv2d_backward_weights(g->ctx, cache, d, gx.f(), gdy.f(), gdw.f());
      if (rep == 1) g->conv2d_backward_data(g->ctx, cache, d, gdy.f(), gw.f(), gdx.f());
      EXPECT_LE(rel_err(down(*g, gy.p, ys), wy), tol) << "forward";
      EXPECT_LE(rel_err(down(*g, gdx.p, xs), wdx), tol) << "backward data";
      EXPECT_LE(rel_err(down(*g, gdw.p, ws), wdw), tol) << "backward weights";
    }
    if (d.n < 2) continue;
    // The same shape at a smaller batch (the first n - 1 images) on a fresh cache: its
    // algorithms come from the ones timed above, with the workspace asked for this batch.
    SCOPED_TRACE("batch n - 1");
    ConvDims d1 = d;
    d1.n = d.n - 1;
    const int64_t xs1 = xs / d.n * d1.n, ys1 = ys / d.n * d1.n;
    const std::vector<float> x1(x.begin(), x.begin() + xs1), dy1(dy.begin(), dy.begin() + ys1);
    std::vector<float> wy1(ys1), wdx1(xs1), wdw1(ws);
    OpCache rc1, cache1;
    ref().conv2d_forward(ref().ctx, rc1, d1, x1.data(), w.data(), wy1.data());
    ref().conv2d_backward_data(ref().ctx, rc1, d1, dy1.data(), w.data(), wdx1.data());
    ref().conv2d_backward_weights(ref().ctx, rc1, d1, x1.data(), dy1.data(), wdw1.data());
    DBuf gy = poisoned(*g, ys1), gdx = poisoned(*g, xs1), gdw = poisoned(*g, ws);
    g->conv2d_forward(g->ctx, cache1, d1, gx.f(), gw.f(), gy.f());
    g->conv2d_backward_weights(g->ctx, cache1, d1, gx.f(), gdy.f(), gdw.f());
    g->conv2d_backward_data(g->ctx, cache1, d1, gdy.f(), gw.f(), gdx.f());
    EXPECT_LE(rel_err(down(*g, gy.p, ys1), wy1), tol) << "forward";
    EXPECT_LE(rel_err(down(*g, gdx.p, xs1), wdx1), tol) << "backward data";
    EXPECT_LE(rel_err(down(*g, gdw.p, ws), wdw1), tol) << "backward weights";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cuda, CudaConv,
    ::testing::Values(ConvCase{"k1s1", {2, 16, 8, 8, 32, 1, 1, 1, 0}},
                      ConvCase{"k1s2_projection", {2, 16, 8, 8, 32, 1, 1, 2, 0}},
                      ConvCase{"k3s1p1", {2, 8, 10, 10, 16, 3, 3, 1, 1}},
                      ConvCase{"k3s2p1_odd", {2, 8, 9, 9, 12, 3, 3, 2, 1}},
                      ConvCase{"k7s2p3_stem", {2, 3, 32, 32, 16, 7, 7, 2, 3}},
                      ConvCase{"k3s1p1_partial_batch3", {3, 16, 4, 4, 16, 3, 3, 1, 1}},
                      ConvCase{"k3s1p1_1x1_spatial", {5, 32, 1, 1, 8, 3, 3, 1, 1}}),
    [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------------
// batchnorm
// ---------------------------------------------------------------------------------------------

class CudaBatchnorm : public CudaOps, public ::testing::WithParamInterface<BnDims> {};

// Training forward, eval forward and backward, plain and with the ReLU after it fused.
TEST_P(CudaBatchnorm, TrainEvalBackward) {
  const BnDims d = GetParam();
  const BnParams p{1e-5f, 0.1f};
  const int64_t total = d.n * d.c * d.hw;
  const uint32_t seed = uint32_t(500 + d.n * 3 + d.c + d.hw);
  auto x = randv(total, seed, -1.f, 2.f), gamma = randv(d.c, seed + 1, 0.5f, 1.5f),
       beta = randv(d.c, seed + 2), dy = randv(total, seed + 3), rm0 = randv(d.c, seed + 4),
       rv0 = randv(d.c, seed + 5, 0.5f, 2.f);
  // reference
  std::vector<float> wy(total), wsm(d.c), wsi(d.c), wrm = rm0, wrv = rv0, wye(total), wdx(total),
                                                    wdg(d.c), wdb(d.c);
  OpCache rc;
  ref().batchnorm_forward_train(ref().ctx, rc, d, p, x.data(), gamma.data(), beta.data(), wy.data(),
                                wsm.data(), wsi.data(), wrm.data(), wrv.data());
  ref().batchnorm_forward_eval(ref().ctx, rc, d, p, x.data(), gamma.data(), beta.data(), rm0.data(),
                               rv0.data(), wye.data());
  ref().batchnorm_backward(ref().ctx, rc, d, x.data(), dy.data(), gamma.data(), wsm.data(),
                           wsi.data(), wdx.data(), wdg.data(), wdb.data());
  // gpu
  Backend& g = gpu();
  DBuf gx = up(g, x), gg = up(g, gamma), gb = up(g, beta), gdy = up(g, dy), grm = up(g, rm0),
       grv = up(g, rv0);
  DBuf gy = poisoned(g, total), gsm = poisoned(g, d.c), gsi = poisoned(g, d.c);
  OpCache cache;
  g.batchnorm_forward_train(g.ctx, cache, d, p, gx.f(), gg.f(), gb.f(), gy.f(), gsm.f(), gsi.f(),
                            grm.f(), grv.f());
  EXPECT_LE(rel_err(down(g, gy.p, total), wy), kTolFp32) << "y";
  EXPECT_LE(rel_err(down(g, gsm.p, d.c), wsm), kTolFp32) << "save_mean";
  EXPECT_LE(rel_err(down(g, gsi.p, d.c), wsi), kTolFp32) << "save_invstd";
  EXPECT_LE(rel_err(down(g, grm.p, d.c), wrm), kTolFp32) << "running_mean";
  EXPECT_LE(rel_err(down(g, grv.p, d.c), wrv), kTolFp32) << "running_var";
  // eval from the initial running statistics
  DBuf grm0 = up(g, rm0), grv0 = up(g, rv0), gye = poisoned(g, total);
  g.batchnorm_forward_eval(g.ctx, cache, d, p, gx.f(), gg.f(), gb.f(), grm0.f(), grv0.f(), gye.f());
  EXPECT_LE(rel_err(down(g, gye.p, total), wye), kTolFp32) << "eval y";
  // backward from the reference's saved statistics (so it is judged on its own)
  DBuf rsm = up(g, wsm), rsi = up(g, wsi);
  DBuf gdx = poisoned(g, total), gdg = poisoned(g, d.c), gdb = poisoned(g, d.c);
  g.batchnorm_backward(g.ctx, cache, d, gx.f(), gdy.f(), gg.f(), rsm.f(), rsi.f(), gdx.f(), gdg.f(),
                       gdb.f());
  EXPECT_LE(rel_err(down(g, gdx.p, total), wdx), kTolFp32) << "dx";
  EXPECT_LE(rel_err(down(g, gdg.p, d.c), wdg), kTolFp32) << "dgamma";
  EXPECT_LE(rel_err(down(g, gdb.p, d.c), wdb), kTolFp32) << "dbeta";

  // With the ReLU after it fused: z = max(y, 0) forward; backward from z and dz, BN's dy being dz
  // where z > 0.
  std::vector<float> wz(total), wdy_masked(total), wdxr(total), wdgr(d.c), wdbr(d.c);
  for (int64_t i = 0; i < total; ++i) {
    wz[i] = std::max(wy[i], 0.f);
    wdy_masked[i] = wz[i] > 0.f ? dy[i] : 0.f;
  }
  ref().batchnorm_backward(ref().ctx, rc, d, x.data(), wdy_masked.data(), gamma.data(), wsm.data(),
                           wsi.data(), wdxr.data(), wdgr.data(), wdbr.data());
  DBuf grm2 = up(g, rm0), grv2 = up(g, rv0), gz = poisoned(g, total);
  g.batchnorm_relu_forward_train(g.ctx, cache, d, p, gx.f(), gg.f(), gb.f(), gz.f(), gsm.f(),
                                 gsi.f(), grm2.f(), grv2.f());
  EXPECT_LE(rel_err(down(g, gz.p, total), wz), kTolFp32) << "relu-fused z";
  DBuf rz = up(g, wz), gdxr = poisoned(g, total);
  g.batchnorm_relu_backward(g.ctx, cache, d, gx.f(), rz.f(), gdy.f(), gg.f(), rsm.f(), rsi.f(),
                            gdxr.f(), gdg.f(), gdb.f());
  EXPECT_LE(rel_err(down(g, gdxr.p, total), wdxr), kTolFp32) << "relu-fused dx";
  EXPECT_LE(rel_err(down(g, gdg.p, d.c), wdgr), kTolFp32) << "relu-fused dgamma";
  EXPECT_LE(rel_err(down(g, gdb.p, d.c), wdbr), kTolFp32) << "relu-fused dbeta";
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaBatchnorm,
                         // The last three have fewer channels than an H100 has SMs (132) and
                         // enough values to be cut into slices: 16 slices, 3 uneven ones, and
                         // ResNet's layer1 at batch 128 (4 slices).
                         ::testing::Values(BnDims{4, 8, 25}, BnDims{3, 16, 1}, BnDims{8, 64, 64},
                                           BnDims{5, 3, 256}, BnDims{32, 8, 1024},
                                           BnDims{7, 3, 1000}, BnDims{128, 64, 64}),
                         [](const auto& info) {
                           return "n" + std::to_string(info.param.n) + "_c" +
                                  std::to_string(info.param.c) + "_hw" +
                                  std::to_string(info.param.hw);
                         });

// ---------------------------------------------------------------------------------------------
// pooling
// ---------------------------------------------------------------------------------------------

class CudaMaxpool : public CudaOps, public ::testing::WithParamInterface<PoolDims> {};

TEST_P(CudaMaxpool, ForwardBackward) {
  const PoolDims d = GetParam();
  const int64_t xs = d.n * d.c * d.h * d.w, ys = d.n * d.c * d.oh() * d.ow();
  const uint32_t seed = uint32_t(700 + d.h * 3 + d.kernel + d.pad);
  auto x = randv(xs, seed), dy = randv(ys, seed + 1);
  std::vector<float> wy(ys), wdx(xs);
  std::vector<int32_t> wam(ys);
  OpCache rc;
  ref().maxpool_forward(ref().ctx, rc, d, x.data(), wy.data(), wam.data());
  ref().maxpool_backward(ref().ctx, rc, d, dy.data(), wam.data(), wdx.data());
  Backend& g = gpu();
  DBuf gx = up(g, x), gdy = up(g, dy);
  DBuf gy = poisoned(g, ys), gam = poisoned(g, ys), gdx = poisoned(g, xs);
  OpCache cache;
  g.maxpool_forward(g.ctx, cache, d, gx.f(), gy.f(), gam.i32());
  g.maxpool_backward(g.ctx, cache, d, gdy.f(), gam.i32(), gdx.f());
  EXPECT_EQ(down(g, gy.p, ys), wy);
  EXPECT_EQ(down<int32_t>(g, gam.p, ys), wam);
  EXPECT_LE(rel_err(down(g, gdx.p, xs), wdx), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaMaxpool,
                         ::testing::Values(PoolDims{2, 3, 9, 9, 3, 2, 1},
                                           PoolDims{2, 4, 8, 8, 2, 2, 0},
                                           PoolDims{3, 5, 16, 16, 3, 2, 1},
                                           PoolDims{1, 2, 7, 5, 3, 1, 1}),
                         [](const auto& info) {
                           const PoolDims& d = info.param;
                           return std::to_string(d.h) + "x" + std::to_string(d.w) + "_k" +
                                  std::to_string(d.kernel) + "s" + std::to_string(d.stride) + "p" +
                                  std::to_string(d.pad);
                         });

TEST_F(CudaOps, GlobalAvgpool) {
  struct Case {
    int64_t n, c, hw;
  };
  for (Case k : {Case{3, 7, 16}, Case{2, 2048, 1}, Case{2, 5, 100}}) {
    SCOPED_TRACE("hw " + std::to_string(k.hw));
    auto x = randv(k.n * k.c * k.hw, uint32_t(900 + k.hw)),
         dy = randv(k.n * k.c, uint32_t(901 + k.hw));
    std::vector<float> wy(k.n * k.c), wdx(x.size());
    ref().global_avgpool_forward(ref().ctx, k.n, k.c, k.hw, Layout::nchw, x.data(), wy.data());
    ref().global_avgpool_backward(ref().ctx, k.n, k.c, k.hw, Layout::nchw, dy.data(), wdx.data());
    Backend& g = gpu();
    DBuf gx = up(g, x), gdy = up(g, dy), gy = poisoned(g, wy.size()), gdx = poisoned(g, x.size());
    g.global_avgpool_forward(g.ctx, k.n, k.c, k.hw, Layout::nchw, gx.f(), gy.f());
    g.global_avgpool_backward(g.ctx, k.n, k.c, k.hw, Layout::nchw, gdy.f(), gdx.f());
    EXPECT_LE(rel_err(down(g, gy.p, wy.size()), wy), 1e-6);
    EXPECT_LE(rel_err(down(g, gdx.p, x.size()), wdx), 1e-7);
  }
}

// ---------------------------------------------------------------------------------------------
// elementwise, softmax cross-entropy, gather_batch
// ---------------------------------------------------------------------------------------------

TEST_F(CudaOps, ReluAndAdd) {
  Backend& g = gpu();
  for (int64_t offset : {0, 1})  // 16-byte aligned (float4 path) and not (scalar path)
    for (int64_t n : {int64_t(1000003), int64_t(5)}) {
      SCOPED_TRACE("n " + std::to_string(n) + " offset " + std::to_string(offset));
      auto a = randv(n, uint32_t(1100 + n + offset)), b = randv(n, uint32_t(1200 + n + offset));
      std::vector<float> wr(n), wrb(n), wadd(n);
      ref().relu_forward(ref().ctx, n, a.data(), wr.data());
      ref().relu_backward(ref().ctx, n, wr.data(), b.data(), wrb.data());
      ref().add(ref().ctx, n, a.data(), b.data(), wadd.data());
      DBuf ga(g, (n + 1) * 4), gb(g, (n + 1) * 4);
      g.upload(g.ctx, ga.f(offset), a.data(), n * 4);
      g.upload(g.ctx, gb.f(offset), b.data(), n * 4);
      DBuf gr = poisoned(g, n + 1), grb = poisoned(g, n + 1), gadd = poisoned(g, n + 1);
      g.relu_forward(g.ctx, n, ga.f(offset), gr.f(offset));
      g.relu_backward(g.ctx, n, gr.f(offset), gb.f(offset), grb.f(offset));
      g.add(g.ctx, n, ga.f(offset), gb.f(offset), gadd.f(offset));
      auto tail = [&](const DBuf& d) {
        auto v = down(g, d.p, n + 1);
        return std::vector<float>(v.begin() + offset, v.begin() + offset + n);
      };
      EXPECT_EQ(tail(gr), wr);
      EXPECT_EQ(tail(grb), wrb);
      EXPECT_EQ(tail(gadd), wadd);
      // in place: y = relu(y), y = a + y
      g.relu_forward(g.ctx, n, ga.f(offset), ga.f(offset));
      EXPECT_EQ(tail(ga), wr);
      g.add(g.ctx, n, gb.f(offset), gb.f(offset), gb.f(offset));
      std::vector<float> b2(n);
      for (int64_t i = 0; i < n; ++i) b2[i] = b[i] + b[i];
      EXPECT_EQ(tail(gb), b2);
    }
}

TEST_F(CudaOps, SoftmaxCrossEntropy) {
  Backend& g = gpu();
  for (int64_t classes : {int64_t(10), int64_t(45)})
    for (bool with_grad : {true, false}) {
      SCOPED_TRACE("classes " + std::to_string(classes) + (with_grad ? " train" : " eval"));
      const int64_t n = 37;
      auto z = randv(n * classes, uint32_t(1300 + classes), -4.f, 4.f);
      std::vector<int32_t> labels(n);
      std::mt19937 rng(1301);
      for (auto& l : labels) l = int32_t(rng() % classes);
      // make some predictions right so the correct count is not trivially 0
      for (int64_t i = 0; i < n; i += 3) z[i * classes + labels[i]] += 10.f;
      const float scale = 1.f / 128.f;
      std::vector<float> wdz(n * classes), wm = {1.5f, 2.f};
      ref().softmax_ce(ref().ctx, n, classes, z.data(), labels.data(), scale,
                       with_grad ? wdz.data() : nullptr, wm.data());
      DBuf gz = up(g, z), gl = up(g, labels), gm = up(g, std::vector<float>{1.5f, 2.f});
      DBuf gdz = poisoned(g, wdz.size());
      g.softmax_ce(g.ctx, n, classes, gz.f(), gl.i32(), scale, with_grad ? gdz.f() : nullptr,
                   gm.f());
      if (with_grad) {
        EXPECT_LE(rel_err(down(g, gdz.p, wdz.size()), wdz), 1e-5);
      }
      auto m = down(g, gm.p, 2);
      EXPECT_NEAR(m[0], wm[0], 1e-5 * std::abs(wm[0])) << "loss sum accumulates";
      EXPECT_EQ(m[1], wm[1]) << "correct count accumulates";
      EXPECT_GT(wm[1], 2.f);
    }
}

TEST_F(CudaOps, GatherBatch) {
  Backend& g = gpu();
  struct Case {
    int ch, h, w;
    bool augment, cursor;  // cursor: a training batch, where a StepCursor on the device says
  };
  for (Case k :
       {Case{1, 28, 28, false, false}, Case{3, 32, 32, false, false}, Case{3, 32, 32, true, false},
        Case{3, 9, 7, true, false}, Case{3, 32, 32, true, true}}) {
    SCOPED_TRACE(std::to_string(k.ch) + "x" + std::to_string(k.h) + "x" + std::to_string(k.w) +
                 (k.augment ? " augment" : "") + (k.cursor ? " cursor" : ""));
    const int64_t count = 20, image = int64_t(k.ch) * k.h * k.w;
    std::mt19937 rng(uint32_t(1500 + k.ch + k.h + k.augment));
    std::vector<uint8_t> images(count * image), labels(count);
    for (auto& v : images) v = uint8_t(rng() & 255);
    for (auto& v : labels) v = uint8_t(rng() % 10);
    std::vector<int32_t> idx(k.cursor ? 3 * 7 + 2 : 7);
    for (auto& v : idx) v = int32_t(rng() % count);
    BatchSpec s;
    s.n = 7;
    StepCursor at;  // the third batch of 7 in an epoch of 23 indices
    at.step = 2, at.stride = 7, at.count = int64_t(idx.size()), at.epoch = 4, at.seed = 99;
    s.channels = k.ch, s.height = k.h, s.width = k.w;
    s.augment = k.augment;
    s.seed = 0x1234567890abcdefull + uint64_t(k.h);
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, sd[3] = {0.2470f, 0.2435f, 0.2616f};
    for (int c = 0; c < k.ch; ++c) s.mean[c] = mean[c], s.inv_std[c] = 1.f / sd[c];
    std::vector<float> wx(s.n * image);
    std::vector<int32_t> wy(s.n);
    if (k.cursor) s.cursor = &at;
    ref().gather_batch(ref().ctx, s, images.data(), labels.data(), idx.data(), wx.data(),
                       wy.data());
    DBuf gi = up(g, images), gl = up(g, labels), gidx = up(g, idx);
    DBuf gx = poisoned(g, wx.size()), gy = poisoned(g, wy.size());
    DBuf gat = up(g, std::vector<StepCursor>{at});
    if (k.cursor) s.cursor = gat.cursor();
    g.gather_batch(g.ctx, s, gi.u8(), gl.u8(), gidx.i32(), gx.f(), gy.i32());
    EXPECT_LE(rel_err(down(g, gx.p, wx.size()), wx), 1e-6);
    EXPECT_EQ(down<int32_t>(g, gy.p, wy.size()), wy);
  }
}

// ---------------------------------------------------------------------------------------------
// optimizers
// ---------------------------------------------------------------------------------------------

TEST_F(CudaOps, Adam) {
  Backend& g = gpu();
  for (int64_t offset : {0, 1})
    for (float wd : {0.f, 0.01f})
      for (int64_t step : {int64_t(1), int64_t(7)}) {
        SCOPED_TRACE("offset " + std::to_string(offset) + " wd " + std::to_string(wd) + " step " +
                     std::to_string(step));
        const int64_t n = 100003;
        const uint32_t seed = uint32_t(1700 + offset * 10 + step + (wd > 0 ? 100 : 0));
        auto p = randv(n, seed), gr = randv(n, seed + 1, -0.1f, 0.1f),
             m = randv(n, seed + 2, -0.01f, 0.01f), v = randv(n, seed + 3, 1e-6f, 1e-3f);
        AdamParams hp;
        hp.weight_decay = wd;
        auto wp = p, wm = m, wv = v;
        StepCursor at;  // Adam's step count t is updates + 1, read on the device
        at.updates = step - 1;
        ref().adam_update(ref().ctx, n, wp.data(), gr.data(), wm.data(), wv.data(), hp, &at);
        DBuf gat = up(g, std::vector<StepCursor>{at});
        DBuf gp(g, (n + 1) * 4), gg(g, (n + 1) * 4), gm(g, (n + 1) * 4), gv(g, (n + 1) * 4);
        g.upload(g.ctx, gp.f(offset), p.data(), n * 4);
        g.upload(g.ctx, gg.f(offset), gr.data(), n * 4);
        g.upload(g.ctx, gm.f(offset), m.data(), n * 4);
        g.upload(g.ctx, gv.f(offset), v.data(), n * 4);
        g.adam_update(g.ctx, n, gp.f(offset), gg.f(offset), gm.f(offset), gv.f(offset), hp,
                      gat.cursor());
        auto part = [&](const DBuf& d) {
          auto all = down(g, d.p, n + 1);
          return std::vector<float>(all.begin() + offset, all.begin() + offset + n);
        };
        EXPECT_LE(rel_err(part(gp), wp), 1e-6) << "p";
        EXPECT_LE(rel_err(part(gm), wm), 1e-6) << "m";
        EXPECT_LE(rel_err(part(gv), wv), 1e-6) << "v";
        // the update itself, not only p (p barely moves at lr 1e-3)
        std::vector<float> dg(n), dw(n);
        auto gpv = part(gp);
        for (int64_t i = 0; i < n; ++i) dg[i] = gpv[i] - p[i], dw[i] = wp[i] - p[i];
        EXPECT_LE(rel_err(dg, dw), 1e-3) << "p - p0";
      }
}

TEST_F(CudaOps, Sgd) {
  Backend& g = gpu();
  for (float momentum : {0.f, 0.9f})
    for (bool nesterov : {false, true}) {
      SCOPED_TRACE("momentum " + std::to_string(momentum) + (nesterov ? " nesterov" : ""));
      const int64_t n = 4099;
      auto p = randv(n, 1900), gr = randv(n, 1901), buf = randv(n, 1902);
      SgdParams hp;
      hp.lr = 0.05f, hp.momentum = momentum, hp.weight_decay = 1e-4f, hp.nesterov = nesterov;
      auto wp = p, wb = buf;
      ref().sgd_update(ref().ctx, n, wp.data(), gr.data(), wb.data(), hp);
      DBuf gp = up(g, p), gg = up(g, gr), gb = up(g, buf);
      g.sgd_update(g.ctx, n, gp.f(), gg.f(), gb.f(), hp);
      EXPECT_LE(rel_err(down(g, gp.p, n), wp), 1e-6);
      EXPECT_LE(rel_err(down(g, gb.p, n), wb), 1e-6);
    }
}

// ---------------------------------------------------------------------------------------------
// a few training steps of a small MLP, end to end on both backends
// ---------------------------------------------------------------------------------------------

TEST_F(CudaOps, MlpTrainingStepsMatchReference) {
  const int64_t B = 16, I = 784, H = 32, O = 10, steps = 5;
  const DenseDims d1{B, I, H}, d2{B, H, O};
  const int64_t np = H * I + H + O * H + O;
  auto params0 = randv(np, 2100, -0.05f, 0.05f);
  auto data = randv(B * I * steps, 2101, 0.f, 1.f);
  std::vector<int32_t> labels(B * steps);
  std::mt19937 rng(2102);
  for (auto& l : labels) l = int32_t(rng() % O);

  auto run = [&](Backend& be, std::vector<float>& metrics_out) {
    auto alloc = [&](int64_t n) { return DBuf(be, n * 4); };
    DBuf p = up(be, params0), gp = alloc(np), m = alloc(np), v = alloc(np), met = alloc(2);
    DBuf x = alloc(B * I), h = alloc(B * H), z = alloc(B * O), dz = alloc(B * O), dh = alloc(B * H);
    DBuf lab(be, B * 4), at(be, sizeof(StepCursor));  // alloc zero-fills: update count 0
    float* w1 = p.f();
    float* b1 = w1 + H * I;
    float* w2 = b1 + H;
    float* b2 = w2 + O * H;
    float* gw1 = gp.f();
    float* gb1 = gw1 + H * I;
    float* gw2 = gb1 + H;
    float* gb2 = gw2 + O * H;
    OpCache c1, c2;
    AdamParams hp;
    for (int64_t s = 0; s < steps; ++s) {
      be.upload(be.ctx, x.p, data.data() + s * B * I, B * I * 4);
      be.upload(be.ctx, lab.p, labels.data() + s * B, B * 4);
      be.dense_forward(be.ctx, c1, d1, x.f(), w1, b1, h.f(), true);
      be.dense_forward(be.ctx, c2, d2, h.f(), w2, b2, z.f(), false);
      be.softmax_ce(be.ctx, B, O, z.f(), lab.i32(), 1.f / B, dz.f(), met.f());
      be.dense_backward(be.ctx, c2, d2, h.f(), w2, dz.f(), dh.f(), gw2, gb2);
      be.relu_backward(be.ctx, B * H, h.f(), dh.f(), dh.f());
      be.dense_backward(be.ctx, c1, d1, x.f(), w1, dh.f(), nullptr, gw1, gb1);
      be.adam_update(be.ctx, np, p.f(), gp.f(), m.f(), v.f(), hp, at.cursor());
      be.advance_cursor(be.ctx, at.cursor());
    }
    EXPECT_EQ(down<StepCursor>(be, at.p, 1)[0].updates, steps) << "the cursor advanced each step";
    metrics_out = down(be, met.p, 2);
    return down(be, p.p, np);
  };
  std::vector<float> mref, mgpu;
  auto pref = run(ref(), mref);
  auto pgpu = run(gpu(), mgpu);
  std::vector<float> dref(np), dgpu(np);
  for (int64_t i = 0; i < np; ++i) dref[i] = pref[i] - params0[i], dgpu[i] = pgpu[i] - params0[i];
  EXPECT_LE(rel_err(dgpu, dref), 1e-3) << "parameter change after " << steps << " Adam steps";
  EXPECT_NEAR(mgpu[0], mref[0], 1e-4 * mref[0]) << "summed loss";
  EXPECT_EQ(mgpu[1], mref[1]) << "correct count";
}

using testing::random_images;

// WORKLOADS.md's ResNet-50, one whole training step on 16 random CIFAR-sized images, through the
// Executor on the oneDNN CPU backend and on the GPU in fp32, from the same initial weights (the
// seed's host init): the loss, the gradient norms (issue 5's check) and the BN running statistics
// agree. Not the gradients element by element: over ResNet-50's 49 ReLUs a value that rounding
// puts on the other side of 0 in one backend flips a mask, and everything before it moves by a
// few percent. Measured CPU against the reference backend (2026-11-27): one flip (layer4.2.relu2)
// made the gradients differ by 2% in relative L2 (the reference itself was 0.7% from float64
// PyTorch), while the loss agreed to 8e-6, every tensor's gradient norm to 0.7% and the total norm
// to 0.15%. Bounds: loss 1e-4, norms 3% per tensor and 0.5% in total, gradient direction 0.1 in
// relative L2 (a wrong sign, scale or tap gives O(1)).
TEST_F(CudaOps, ResNet50StepMatchesCpu) {
  const int64_t n = 16;
  const DatasetPair data = random_images(n, 2300, 32);
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = n;
  const Model m = build_workload_model(w, data.train);
  auto cpu = make_backend({DeviceKind::cpu, 0, Precision::fp32, 0, false});
  struct Result {
    float loss;
    std::vector<float> grads, state;
  };
  auto one_step = [&](Backend& be) {
    Executor t(m, be, hp, w, data);
    be.fill(be.ctx, t.buffers().metrics, 0.f, 4);
    t.step(n, nullptr);  // the training set in order (the executor's start)
    Result r;
    r.loss = down(be, t.buffers().metrics, 1)[0] / float(n);
    r.grads = down(be, t.buffers().grads, m.param_count);
    r.state = down(be, t.buffers().state, m.state_count);
    return r;
  };
  const Result want = one_step(*cpu), got = one_step(gpu());
  auto norm = [](const float* p, int64_t count) {
    double s = 0;
    for (int64_t i = 0; i < count; ++i) s += double(p[i]) * p[i];
    return std::sqrt(s);
  };
  EXPECT_NEAR(got.loss, want.loss, 1e-4 * want.loss) << "loss";
  const double total_got = norm(got.grads.data(), m.param_count),
               total_want = norm(want.grads.data(), m.param_count);
  EXPECT_NEAR(total_got / total_want, 1.0, 5e-3) << "total gradient norm";
  EXPECT_LE(rel_err(got.grads, want.grads), 0.1) << "gradient direction";
  EXPECT_LE(rel_err(got.state, want.state), 1e-4) << "BN running statistics";
  double worst = 0;
  for (const Node& node : m.nodes) {
    if (node.param_offset < 0) continue;
    const double g = norm(got.grads.data() + node.param_offset, node.param_count),
                 w = norm(want.grads.data() + node.param_offset, node.param_count);
    worst = std::max(worst, std::fabs(g / w - 1));
    EXPECT_NEAR(g / w, 1.0, 0.03) << node.name << " gradient norm";
  }
  std::printf(
      "ResNet-50 step, GPU vs CPU fp32: loss %.6f vs %.6f, total gradient norm ratio %.5f, "
      "worst tensor norm ratio off by %.2e, gradients %.2e apart (relative L2)\n",
      got.loss, want.loss, total_got / total_want, worst, rel_err(got.grads, want.grads));
}

// Device timers: marks in stream order behind the gate. The host sleeps between two marks; the
// gate holds the device until the read, so the sleep must not show in the device's times, while
// a fill of 1 GiB between marks must (at least 0.2 ms at 5 TB/s, more than any card here has).
TEST_F(CudaOps, TimersTimeTheDeviceNotTheHost) {
  Backend& g = gpu();
  ASSERT_NE(g.timers_create, nullptr);
  const int64_t count = int64_t(256) << 20;
  DBuf buf(g, size_t(count) * sizeof(float));
  void* timers = g.timers_create(g.ctx, 3);
  g.timers_start(g.ctx, timers);
  g.timer_mark(g.ctx, timers, 0);
  g.fill(g.ctx, buf.f(), 1.f, count);
  g.timer_mark(g.ctx, timers, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  g.timer_mark(g.ctx, timers, 2);
  float ms[3] = {-1, -1, -1};
  EXPECT_TRUE(g.timers_read(g.ctx, timers, 3, ms)) << "the gate timed out";
  g.timers_destroy(g.ctx, timers);
  EXPECT_EQ(ms[0], 0.f);
  EXPECT_GT(ms[1], 0.1f) << "the fill";
  EXPECT_LT(ms[1], 20.f) << "the fill";
  EXPECT_LT(ms[2] - ms[1], 5.f) << "the host's 50 ms sleep leaked into the device's time";
  EXPECT_EQ(down(g, buf.p, 1)[0], 1.f);
}

using testing::tiny_resnet;

// CUDA graphs: the same training run (MLP, then a small ResNet with augmentation, each with a
// partial last batch) with the step recorded and replayed against every op issued. Both runs are
// deterministic (the same cuDNN algorithms, chosen without timing, that sum in a fixed order),
// so the same kernels in the same order must give the same parameters to the bit; the graph run
// must really replay.
TEST_F(CudaOps, GraphReplayMatchesIssuedSteps) {
  const DatasetPair data = random_images(40, 2400);
  const Model resnet = tiny_resnet();
  const Model mlp = build_mlp(3, 16, 16, {32}, 10);
  for (const Model* m : {&mlp, &resnet}) {
    const Workload& w = find_workload("resnet50-cifar10");  // its normalisation fits 3 channels
    Hyper hp = w.defaults;
    hp.batch = 16, hp.epochs = 3, hp.augment = m == &resnet;  // 16 16 8 per epoch
    std::vector<float> params[2];
    std::string summary[2];
    EvalResult eval[2];
    for (int graphs = 0; graphs < 2; ++graphs) {
      BackendConfig cfg;
      cfg.device = DeviceKind::cuda;
      cfg.graphs = graphs == 1;
      cfg.deterministic = true;
      auto be = make_backend(cfg);
      Executor t(*m, *be, hp, w, data);
      train(t, nullptr);
      eval[graphs] = t.evaluate();  // 16 16 8: the second batch of 16 replays
      params[graphs] = t.download_params();
      summary[graphs] = t.graph_summary();
    }
    EXPECT_EQ(eval[1].loss, eval[0].loss);
    EXPECT_EQ(eval[1].accuracy, eval[0].accuracy);
    EXPECT_NE(summary[1].find("test pass: 1 batches replayed"), std::string::npos) << summary[1];
    EXPECT_EQ(summary[0], "off (the backend records no graphs)");
    EXPECT_EQ(summary[1].rfind("on: ", 0), 0u) << summary[1];
    EXPECT_NE(summary[1].find("2 graph(s), batch 8, 16"), std::string::npos) << summary[1];
    EXPECT_EQ(params[1], params[0]) << summary[1];
    std::printf("%s: %s, parameters %.2e apart (relative L2)\n", m == &mlp ? "MLP" : "ResNet",
                summary[1].c_str(), rel_err(params[1], params[0]));
  }
}

// A checkpoint written on the GPU after the first epoch, or inside the second (cut by --steps
// before its partial last batch), resumed on the GPU (graphs recorded after the restore, the
// cursor's step and update count uploaded into device memory), ends where the uninterrupted GPU
// run does, to the bit (deterministic algorithms, as above).
TEST_F(CudaOps, ResumedRunEndsWhereTheUninterruptedOneDoes) {
  const DatasetPair data = random_images(40, 2500);
  const Model m = tiny_resnet();
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = 16, hp.epochs = 3, hp.augment = true;
  BackendConfig cfg;
  cfg.device = DeviceKind::cuda;
  cfg.deterministic = true;
  auto run = [&](int epochs, int64_t steps, const Checkpoint* resume, Checkpoint* written) {
    Hyper h = hp;
    h.epochs = epochs, h.steps = steps;
    auto be = make_backend(cfg);
    Executor t(m, *be, h, w, data);
    CheckpointPlan plan;
    plan.resume = resume, plan.resume_path = "gpu.tbck";
    plan.write = [written](const Checkpoint& c) {
      if (written) *written = c;
      return true;
    };
    train(t, nullptr, plan);
    return t.download_params();
  };
  const std::vector<float> whole = run(3, -1, nullptr, nullptr);
  Checkpoint after_one, inside_two;
  run(1, -1, nullptr, &after_one);
  ASSERT_EQ(after_one.epochs_done, 1);
  EXPECT_EQ(after_one.updates, 3);
  const std::vector<float> resumed = run(3, -1, &after_one, nullptr);
  EXPECT_EQ(resumed, whole) << rel_err(resumed, whole);
  run(3, 5, nullptr, &inside_two);  // the last one written: at the cut
  ASSERT_EQ(inside_two.epochs_done, 1);
  ASSERT_EQ(inside_two.epoch_so_far.steps, 2);
  EXPECT_EQ(inside_two.updates, 5);
  const std::vector<float> resumed_inside = run(3, -1, &inside_two, nullptr);
  EXPECT_EQ(resumed_inside, whole) << rel_err(resumed_inside, whole);
}

// `evaluate` on the GPU: a test-only Executor (no gradients, optimizer state or training set on
// the device; the test pass replayed from graphs) tests a GPU-trained model as the Executor that
// trained it does, to the bit (deterministic algorithms), and as the CPU does within a few
// images; in bf16 (widths in multiples of 8, so the convolutions run in bf16, from the weights'
// bf16 mirror refreshed by the upload) within 2% of the fp32 loss.
TEST_F(CudaOps, TestOnlyTrainerTestsAsTheTrainingOne) {
  const DatasetPair data = random_images(40, 2600);
  const Model m = tiny_resnet(3, 1, 8);
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = 16, hp.epochs = 2;
  BackendConfig cfg;
  cfg.device = DeviceKind::cuda;
  cfg.deterministic = true;
  auto be = make_backend(cfg);
  Executor trained(m, *be, hp, w, data);
  const TrainResult r = train(trained, nullptr);
  const Checkpoint c = capture_checkpoint(trained, r, "", {});
  const EvalResult expect = trained.evaluate();

  auto evaluate_on = [&](BackendConfig bc) {
    auto b = make_backend(bc);
    Executor t(m, *b, hp, w, data, ExecutorUse::test_only);
    EXPECT_EQ(t.buffers().grads, nullptr);
    EXPECT_EQ(t.buffers().train_images, nullptr);
    load_model(t, c, "gpu.tbck");
    return t.evaluate();
  };
  const EvalResult gpu = evaluate_on(cfg);
  EXPECT_EQ(gpu.loss, expect.loss);
  EXPECT_EQ(gpu.accuracy, expect.accuracy);
  const EvalResult cpu = evaluate_on({DeviceKind::cpu, 0, Precision::fp32, 2, false});
  EXPECT_NEAR(cpu.accuracy, expect.accuracy, 2.5 / 40);
  EXPECT_NEAR(cpu.loss, expect.loss, 1e-3 * expect.loss);
  BackendConfig bf16 = cfg;
  bf16.precision = Precision::bf16;
  const EvalResult half = evaluate_on(bf16);
  EXPECT_NEAR(half.loss, expect.loss, 2e-2 * expect.loss);
  EXPECT_NE(half.loss, expect.loss) << "bf16 gave fp32's loss to the bit: not bf16";
  std::printf("test pass: GPU %.6f, CPU %.6f, GPU bf16 %.6f (loss)\n", gpu.loss, cpu.loss,
              half.loss);
}

// ---------------------------------------------------------------------------------------------
// the fused MLP step (mlp_step.cu)
// ---------------------------------------------------------------------------------------------

// Against ref::mlp_step, the ops it fuses composed on the host: fashion-mlp's 784 -> 128 -> 10 at
// batch 32 and a partial batch of 7, three steps each (Adam's step count 1..3 from the cursor,
// which moves between them), every output and all parameters, gradients and Adam state compared.
TEST_F(CudaOps, FusedMlpStepMatchesReference) {
  BackendConfig cfg;
  cfg.device = DeviceKind::cuda;
  cfg.cuda.fused_mlp = true;
  auto gp = make_backend(cfg);
  Backend& g = *gp;
  ASSERT_NE(g.mlp_step, nullptr);
  const int64_t in = 784, hidden = 128, classes = 10, count = 100;
  const int64_t P = hidden * in + hidden + classes * hidden + classes;
  const testing::MlpStepSource src = testing::mlp_step_source(count, in, classes, 2700);
  const std::vector<uint8_t>&images = src.images, &labels = src.labels;
  const std::vector<int32_t>& perm = src.order;
  DBuf gi = up(g, images), gl = up(g, labels), gperm = up(g, perm);
  for (int64_t n : {int64_t(32), int64_t(7)}) {
    SCOPED_TRACE("batch " + std::to_string(n));
    const size_t np = static_cast<size_t>(P);
    std::vector<float> params = randv(np, 2701, -0.05f, 0.05f), m(np), v(np), grads(np),
                       h(static_cast<size_t>(n * hidden)), dh(h.size()),
                       z(static_cast<size_t>(n * classes)), dz(z.size()), metrics(2);
    std::vector<int32_t> y(static_cast<size_t>(n));
    DBuf dp = up(g, params), dm = up(g, m), dv = up(g, v), dg = poisoned(g, np),
         dhh = poisoned(g, h.size()), ddh = poisoned(g, dh.size()), dzz = poisoned(g, z.size()),
         ddz = poisoned(g, dz.size()), dmet = up(g, metrics), dy(g, y.size() * 4);
    StepCursor at;
    at.stride = n, at.count = count, at.epoch = 1, at.seed = 5;
    DBuf dat = up(g, std::vector<StepCursor>{at});
    MlpStep hs;
    hs.batch.n = n, hs.batch.channels = 1, hs.batch.height = hs.batch.width = 28;
    hs.batch.mean[0] = 0.2860f, hs.batch.inv_std[0] = 1.f / 0.3530f;
    hs.in = in, hs.hidden = hidden, hs.classes = classes;
    MlpStep ds = hs;
    hs.images = images.data(), hs.labels = labels.data(), hs.indices = perm.data();
    hs.params = params.data(), hs.grads = grads.data(), hs.m = m.data(), hs.v = v.data();
    hs.h = h.data(), hs.dh = dh.data(), hs.logits = z.data(), hs.dlogits = dz.data();
    hs.y = y.data(), hs.metrics = metrics.data(), hs.batch.cursor = &at;
    ds.images = gi.u8(), ds.labels = gl.u8(), ds.indices = gperm.i32();
    ds.params = dp.f(), ds.grads = dg.f(), ds.m = dm.f(), ds.v = dv.f();
    ds.h = dhh.f(), ds.dh = ddh.f(), ds.logits = dzz.f(), ds.dlogits = ddz.f();
    ds.y = dy.i32(), ds.metrics = dmet.f(), ds.batch.cursor = dat.cursor();
    for (int step = 0; step < 3; ++step) {
      ref::mlp_step(hs);
      ASSERT_TRUE(g.mlp_step(g.ctx, ds));
      advance(at);
      g.advance_cursor(g.ctx, dat.cursor());
    }
    EXPECT_EQ(down<int32_t>(g, dy.p, y.size()), y) << "labels";
    EXPECT_LE(rel_err(down(g, dhh.p, h.size()), h), kTolFp32) << "h";
    EXPECT_LE(rel_err(down(g, dzz.p, z.size()), z), kTolFp32) << "logits";
    EXPECT_LE(rel_err(down(g, ddz.p, dz.size()), dz), kTolFp32) << "dlogits";
    EXPECT_LE(rel_err(down(g, ddh.p, dh.size()), dh), kTolFp32) << "dh";
    EXPECT_LE(rel_err(down(g, dg.p, grads.size()), grads), kTolFp32) << "gradients";
    EXPECT_LE(rel_err(down(g, dm.p, m.size()), m), kTolFp32) << "Adam m";
    EXPECT_LE(rel_err(down(g, dv.p, v.size()), v), kTolFp32) << "Adam v";
    EXPECT_LE(rel_err(down(g, dp.p, params.size()), params), kTolFp32) << "parameters";
    const auto met = down(g, dmet.p, 2);
    EXPECT_NEAR(met[0], metrics[0], 1e-5 * metrics[0]) << "loss sum";
    EXPECT_EQ(met[1], metrics[1]) << "correct count";
  }
}

// Through the executor: the fused step in place of the issued ops, graphs on, two epochs with a
// partial last batch; the fused step ran and the parameters moved the same way.
TEST_F(CudaOps, FusedMlpStepFollowsIssuedOps) {
  const DatasetPair data = random_images(100, 2702);  // 32 32 32 4, three channels
  const Model m = build_mlp(3, 16, 16, {128}, 10);
  const Workload& w = find_workload("resnet50-cifar10");  // its normalisation fits 3 channels
  Hyper hp = w.defaults;
  hp.batch = 32, hp.epochs = 2, hp.augment = false;
  std::vector<float> moved[2];
  for (int fused = 0; fused < 2; ++fused) {
    BackendConfig cfg;
    cfg.device = DeviceKind::cuda;
    cfg.cuda.fused_mlp = fused == 1;
    auto be = make_backend(cfg);
    Executor t(m, *be, hp, w, data);
    moved[fused] = testing::parameter_moves(t);
    EXPECT_EQ(t.fused_mlp_taken(), fused == 1);
  }
  const double e = rel_err(moved[1], moved[0]);
  EXPECT_LE(e, 1e-3) << "parameter moves, fused step vs issued ops";
  std::printf("fused MLP step vs issued ops: parameter moves %.2e apart (relative L2)\n", e);
}

// The toy ResNet's runs: batch 16 (16 16 8 on 40 images), two epochs, augmented.
Hyper toy_resnet_hyper() {
  Hyper hp = find_workload("resnet50-cifar10").defaults;
  hp.batch = 16, hp.epochs = 2, hp.augment = true;
  return hp;
}

// bf16 copies reused (weights from the mirror that the optimizer keeps, x from the forward, dy
// shared by both backward directions) against every call converting its own operands: the same
// deterministic run, with new parameters uploaded halfway, which the mirror must follow. The two
// can differ only where cuBLASLt picks another algorithm for a differently aligned operand
// (rounding); a stale copy anywhere moves the parameters by orders of magnitude more.
TEST_F(CudaOps, Bf16ReusedCopiesMatchConvertingEachCall) {
  const DatasetPair data = random_images(40, 2402);
  const Model m = tiny_resnet(3, 1, 8);  // channels in multiples of 8: bf16 convolutions
  const Workload& w = find_workload("resnet50-cifar10");
  const Hyper hp = toy_resnet_hyper();
  for (bool nhwc : {false, true}) {
    SCOPED_TRACE(nhwc ? "nhwc" : "nchw");
    std::vector<float> moved[2];
    for (int reuse = 0; reuse < 2; ++reuse) {
      BackendConfig cfg;
      cfg.device = DeviceKind::cuda;
      cfg.precision = Precision::bf16;
      cfg.deterministic = true;
      cfg.reuse_bf16 = reuse == 1;
      cfg.cuda.bf16_nhwc = nhwc;
      auto be = make_backend(cfg);
      Executor t(m, *be, hp, w, data);
      train(t, nullptr);
      std::vector<float> p1 = t.download_params();
      for (float& v : p1) v *= 0.9f;
      t.upload_params(p1);
      train(t, nullptr);
      moved[reuse] = t.download_params();
      for (size_t i = 0; i < p1.size(); ++i) moved[reuse][i] -= p1[i];
    }
    const double e = rel_err(moved[1], moved[0]);
    EXPECT_LE(e, 1e-4) << "parameter moves after the upload, reused copies vs converting each call";
    std::printf("bf16 copies reused vs converted per call (%s): moves %.2e apart (relative L2)\n",
                nhwc ? "nhwc" : "nchw", e);
  }
}

// bf16 end to end: one training step of the toy ResNet on the GPU in bf16 against the oneDNN
// CPU backend in fp32 from the same weights (loss and gradients agree to bf16's precision), then
// ten epochs in bf16 (with graphs) on a learnable set: the loss stays finite and falls.
TEST_F(CudaOps, Bf16TrainingFollowsFp32) {
  const DatasetPair data = random_images(32, 2500);
  const Model m = tiny_resnet(3, 1, 8);  // channels in multiples of 8: bf16 convolutions
  const Workload& w = find_workload("resnet50-cifar10");
  Hyper hp = w.defaults;
  hp.batch = 32;
  auto one_step = [&](Backend& be, std::vector<float>* grads) {
    Executor t(m, be, hp, w, data);
    be.fill(be.ctx, t.buffers().metrics, 0.f, 4);
    t.step(32, nullptr);  // the training set in order (the executor's start)
    *grads = down(be, t.buffers().grads, m.param_count);
    return down(be, t.buffers().metrics, 1)[0] / 32.f;
  };
  auto cpu = make_backend({DeviceKind::cpu, 0, Precision::fp32, 0, false});
  std::vector<float> want;
  const float loss_want = one_step(*cpu, &want);
  for (bool nhwc : {false, true}) {
    SCOPED_TRACE(nhwc ? "nhwc" : "nchw");
    auto bf16 = make_gpu(Precision::bf16, nhwc);
    std::vector<float> got;
    const float loss_got = one_step(*bf16, &got);
    EXPECT_NEAR(loss_got, loss_want, 1e-2 * loss_want) << "loss";
    EXPECT_LE(rel_err(got, want), 5e-2) << "gradients, relative L2";
    std::printf(
        "toy ResNet step, GPU bf16 (%s) vs CPU fp32: loss %.5f vs %.5f, gradients %.2e "
        "apart\n",
        nhwc ? "nhwc" : "nchw", loss_got, loss_want, rel_err(got, want));
  }

  // Learnable: the label is written into the image (one bright row per class).
  DatasetPair learn = random_images(64, 2501);
  for (Dataset* s : {&learn.train, &learn.test})
    for (int64_t i = 0; i < s->count; ++i)
      for (int c = 0; c < 3; ++c)
        for (int x = 0; x < 16; ++x)
          s->images[size_t(((i * 3 + c) * 16 + s->labels[size_t(i)]) * 16 + x)] = 255;
  hp.batch = 16, hp.epochs = 10;
  auto bf16 = make_gpu(Precision::bf16, /*nhwc=*/true);
  Executor t(m, *bf16, hp, w, learn);
  const TrainResult r = train(t, nullptr);
  for (const EpochResult& e : r.epochs) EXPECT_TRUE(std::isfinite(e.loss));
  EXPECT_LT(r.epochs.back().loss, 0.5 * r.epochs.front().loss);
  std::printf("toy ResNet, 10 epochs in bf16 (nhwc): loss %.4f -> %.4f, %s\n",
              r.epochs.front().loss, r.epochs.back().loss, t.graph_summary().c_str());
}

// --deterministic on the GPU: algorithms from cuDNN's heuristic, deterministic ones only, and
// the metrics summed in one block, so two runs of the toy ResNet (augmented, graphs on) end with
// the same parameters and losses to the bit, in fp32 and in bf16 (both layouts).
TEST_F(CudaOps, DeterministicRunsRepeatExactly) {
  const DatasetPair data = random_images(40, 2600);
  const Model m = tiny_resnet(3, 1, 8);  // channels in multiples of 8: bf16 convolutions
  const Workload& w = find_workload("resnet50-cifar10");
  const Hyper hp = toy_resnet_hyper();
  const std::pair<Precision, bool> configs[] = {
      {Precision::fp32, false}, {Precision::bf16, false}, {Precision::bf16, true}};
  for (const auto& [prec, nhwc] : configs) {
    SCOPED_TRACE(std::string(pname(prec)) + (nhwc ? " nhwc" : ""));
    std::vector<float> params[2];
    double loss[2] = {0, 0};
    for (int run = 0; run < 2; ++run) {
      BackendConfig cfg;
      cfg.device = DeviceKind::cuda, cfg.precision = prec, cfg.deterministic = true;
      cfg.cuda.bf16_nhwc = nhwc;
      auto be = make_backend(cfg);
      Executor t(m, *be, hp, w, data);
      loss[run] = train(t, nullptr).epochs.back().loss;
      params[run] = t.download_params();
    }
    EXPECT_EQ(params[0], params[1]);
    EXPECT_EQ(loss[0], loss[1]);
  }
}

#endif  // TRAINBENCH_HAVE_CUDA

}  // namespace
}  // namespace tb
