"""Shared code of the PyTorch peer scripts (bench/peers/*_torch.py).

Works with PyTorch 1.13 (Debian's python3-torch, CPU only) and PyTorch 2.x (CUDA).
`torch` is imported only by `import_torch()`, after the options are parsed, so that the BLAS
thread count can still be set through the environment before the BLAS library is loaded.

Timing rules (WORKLOADS.md, "What every run measures and records"):
  * load        reading + decoding the data set, up to tensors resident on the device;
  * epochs[i]   wall time of epoch i (includes the per-epoch shuffle; on CUDA the clock is read
                after torch.cuda.synchronize());
  * train       sum of the epochs (model construction and optimiser set-up are excluded);
  * test        one pass over the test set in eval mode;
  * train_test  train + test, the figure the 2021 article quoted.
  * steady      training throughput excluding the first 5% of the planned steps
                (ceil(0.05 * steps)); compile / cuDNN autotuning / allocator warm-up falls there.
"""

import argparse
import datetime
import gzip
import io
import json
import math
import os
import platform
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time

torch = None  # set by import_torch()


# --------------------------------------------------------------------------------------------
# options

def base_parser(description, workload, batch, epochs, framework="torch"):
    """framework "torch" or "keras": the options of one framework only are added."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", default=None, help="data set location (see --help of each script)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"],
                   help="fp32: strict fp32 (TF32 off on CUDA); tf32: TF32 matmul/conv on CUDA "
                        "(same as fp32 on CPU); bf16: autocast to bfloat16")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--test-batch", type=int, default=0,
                   help="batch of the test pass (default: same as --batch)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads(N); Keras: TensorFlow's intra- and inter-op "
                        "thread pools (default: leave the framework's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="stop training after N steps (0: all)")
    p.add_argument("--no-train-metrics", action="store_true",
                   help="do not accumulate training loss/accuracy (they are recorded as NaN)")
    p.add_argument("--no-util", action="store_true",
                   help="do not sample CPU/GPU utilisation in a background thread")
    p.add_argument("--out", default=None, help="write the result record (JSON) here")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(workload=workload, blas_threads=0)
    if framework == "keras":
        p.add_argument("--jit-compile", action="store_true",
                       help="tf.function(jit_compile=True): XLA-compile the train step")
        return p
    p.add_argument("--blas-threads", type=int, default=0,
                   help="sets OPENBLAS_NUM_THREADS / MKL_NUM_THREADS before torch is imported "
                        "(default: leave the environment alone)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (PyTorch 2.x)")
    p.add_argument("--compile-mode", default=None,
                   help="mode for torch.compile (default | reduce-overhead | max-autotune)")
    p.add_argument("--adam", default="auto", choices=["auto", "single", "foreach", "fused"],
                   help="Adam implementation (auto: fused on CUDA with PyTorch >= 2, else "
                        "PyTorch's default)")
    p.add_argument("--flush-denormal", action="store_true",
                   help="torch.set_flush_denormal(True): CPU flushes denormals to zero (FTZ/DAZ), "
                        "as TensorFlow does on CPU; PyTorch's default is off")
    return p


def die(msg):
    print(f"{os.path.basename(sys.argv[0])}: {msg}", file=sys.stderr)
    sys.exit(2)


def check_common_args(args):
    for name in ("epochs", "batch"):
        if getattr(args, name) <= 0:
            die(f"--{name} must be positive, got {getattr(args, name)}")
    for name in ("steps", "threads", "blas_threads", "test_batch"):
        if getattr(args, name) < 0:
            die(f"--{name.replace('_', '-')} must not be negative, got {getattr(args, name)}")
    if not (args.lr > 0):
        die(f"--lr must be positive, got {args.lr}")
    if args.test_batch == 0:
        args.test_batch = args.batch
    if args.out:
        d = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(d):
            die(f"--out {args.out}: directory {d} does not exist")


def import_torch(args):
    """Sets BLAS thread variables (before the BLAS is loaded), imports torch, applies
    threads, device and precision settings. Returns the torch.device."""
    global torch
    if args.blas_threads:
        for v in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
            os.environ[v] = str(args.blas_threads)
    import torch as _torch
    torch = _torch
    if args.flush_denormal:          # before the thread pool starts: new threads inherit MXCSR
        if not torch.set_flush_denormal(True):
            die("--flush-denormal: not supported on this CPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        dev = torch.device(args.device)
    except RuntimeError as e:
        die(f"--device {args.device}: {e}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            die(f"--device {args.device}: CUDA is not available to this PyTorch "
                f"({torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            die(f"--device {args.device}: only {torch.cuda.device_count()} CUDA device(s)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        die(f"--device {args.device}: expected cpu, cuda or cuda:N")
    # Precision. PyTorch's defaults differ between matmul (TF32 off) and cuDNN (TF32 on),
    # so both are set explicitly: fp32 means fp32 everywhere.
    tf32 = args.precision == "tf32"
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        if hasattr(torch, "set_float32_matmul_precision"):
            torch.set_float32_matmul_precision("high" if tf32 else "highest")
    if args.compile and not hasattr(torch, "compile"):
        die(f"--compile: torch.compile needs PyTorch >= 2.0 (this is {torch.__version__})")
    return dev


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def autocast_ctx(dev, precision):
    import contextlib
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)


def make_adam(params, args, dev):
    kw = dict(lr=args.lr, betas=(0.9, 0.999), eps=1e-7)
    impl = args.adam
    major = int(torch.__version__.split(".")[0])
    if impl == "auto":
        impl = "fused" if (dev.type == "cuda" and major >= 2) else "default"
    if impl == "fused":
        kw["fused"] = True
    elif impl == "foreach":
        kw["foreach"] = True
    elif impl == "single":
        kw["foreach"] = False
    try:
        opt = torch.optim.Adam(params, **kw)
    except (TypeError, RuntimeError) as e:
        die(f"--adam {args.adam}: not supported by PyTorch {torch.__version__} on "
            f"{dev.type}: {e}")
    return opt, impl


def maybe_compile(model, args):
    if not args.compile:
        return model
    kw = {}
    if args.compile_mode:
        kw["mode"] = args.compile_mode
    return torch.compile(model, **kw)


# --------------------------------------------------------------------------------------------
# data files, read without any framework: raw uint8 bytes + shape, each peer wraps them
# (torch.frombuffer / numpy.frombuffer). Checks and messages are shared by every peer.

FASHION_DEFAULT = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
RESNET50_PARAMS = 23_528_522
RESNET50_MACS = 83_431_424              # forward, per 32x32 image (83,410,944 in convolutions)
RESNET50_MACS_CONV1 = 7 * 7 * 3 * 64 * 16 * 16   # stem conv: its input gradient is not needed
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CIFAR_DEFAULT = [
    os.path.join(_REPO, "data", "cifar-10-batches-bin"),
    "/usr/share/datasets/cifar10/cifar-10-batches-bin",
    os.path.join(_REPO, "shared", "data", "cifar10-jpeg.tar.gz"),
    os.path.join(os.path.dirname(_REPO), "shared", "data", "cifar10-jpeg.tar.gz"),
    "/work/shared/data/cifar10-jpeg.tar.gz",
]


def _find_idx(d, stem):
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return p
    die(f"--data {d}: {stem}.gz not found")


def read_idx(path, want_dims):
    """uint8 IDX file -> (bytes, dims)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        die(f"{path}: cannot read: {e}")
    if len(raw) < 4:
        die(f"{path}: truncated IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or ndim != want_dims:
        die(f"{path}: not a uint8 IDX file with {want_dims} dimension(s) "
            f"(magic {raw[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    off = 4 + 4 * ndim
    count = 1
    for d in dims:
        count *= d
    if len(raw) - off != count:
        die(f"{path}: expected {count} data bytes for shape {dims}, found {len(raw) - off}")
    return bytearray(raw[off:]), dims


def load_fashion_raw(data_dir):
    """Fashion-MNIST IDX files -> [(bytes, dims)] for train images, train labels, test images,
    test labels, checked (counts agree, 28x28, labels 0..9)."""
    if not os.path.isdir(data_dir):
        die(f"--data {data_dir}: not a directory")
    out = [read_idx(_find_idx(data_dir, stem), 3 if "images" in stem else 1)
           for stem in FASHION_FILES]
    (_, dxtr), (ytr, dytr), (_, dxte), (yte, dyte) = out
    if dxtr[0] != dytr[0] or dxte[0] != dyte[0]:
        die(f"--data {data_dir}: image and label counts differ")
    if tuple(dxtr[1:]) != (28, 28) or tuple(dxte[1:]) != (28, 28):
        die(f"--data {data_dir}: images are not 28x28")
    if max(ytr) > 9 or max(yte) > 9:
        die(f"--data {data_dir}: label above 9")
    return out


def _bin_records(name, raw, want):
    if len(raw) != want * 3073:
        die(f"{name}: {len(raw)} bytes, expected {want} records of 3073 bytes")
    labels = list(raw[0::3073])
    if max(labels) > 9:
        die(f"{name}: label above 9")
    mv = memoryview(raw)
    return b"".join(mv[i * 3073 + 1:(i + 1) * 3073] for i in range(want)), labels


def _from_bin(read, names, where):
    """read(name) -> bytes. Official layout: data_batch_1..5.bin, test_batch.bin."""
    xs, ys = bytearray(), []
    for i in range(1, 6):
        n = f"data_batch_{i}.bin"
        if n not in names:
            die(f"--data {where}: {n} missing")
        x, y = _bin_records(n, read(n), 10000)
        xs += x
        ys += y
    if "test_batch.bin" not in names:
        die(f"--data {where}: test_batch.bin missing")
    xt, yt = _bin_records("test_batch.bin", read("test_batch.bin"), 10000)
    return [(xs, "chw", ys), (bytearray(xt), "chw", yt)]


def _decode_images(items, where):
    """items: list of (split, class_index, sort_key, bytes-or-path) -> (bytes, "hwc", labels)."""
    try:
        from PIL import Image
    except ImportError:
        die(f"--data {where}: decoding JPEG needs PIL (apt-get install python3-pil or "
            f"pip install pillow), or give the binary cifar-10-batches-bin folder")
    n = len(items)
    buf = bytearray(n * 3072)
    labels = []
    for i, (_, cls, _, src) in enumerate(items):
        try:
            im = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
            im = im.convert("RGB")
        except Exception as e:
            die(f"--data {where}: cannot decode image {i}: {e}")
        if im.size != (32, 32):
            die(f"--data {where}: image {i} is {im.size[0]}x{im.size[1]}, not 32x32")
        buf[i * 3072:(i + 1) * 3072] = im.tobytes()
        labels.append(cls)
    return buf, "hwc", labels


def _split_images(entries, where):
    """entries: list of (relative path parts, src). Keeps .../{train,test}/<class>/<file>."""
    by = {"train": [], "test": []}
    for parts, src in entries:
        if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_EXT):
            continue
        split, cname, fname = parts[-3], parts[-2], parts[-1]
        if split not in by:
            continue
        if cname not in CIFAR_CLASSES:
            die(f"--data {where}: unknown class folder {split}/{cname}")
        by[split].append((split, CIFAR_CLASSES.index(cname), fname, src))
    for split in by:
        if not by[split]:
            die(f"--data {where}: no images under {split}/<class>/")
        by[split].sort(key=lambda e: (e[1], e[2]))
    return [_decode_images(by["train"], where), _decode_images(by["test"], where)]


def load_cifar_raw(where):
    """CIFAR-10 from the binary batches (folder or .tar.gz), an image-folder root or its .tar.gz
    -> [(bytes, layout, labels)] for train and test; layout "chw" (N x 3 x 32 x 32, binary
    batches) or "hwc" (N x 32 x 32 x 3, decoded images)."""
    if os.path.isfile(where):
        try:
            tf = tarfile.open(where, "r:*")
        except (tarfile.TarError, OSError) as e:
            die(f"--data {where}: not a readable tar archive: {e}")
        with tf:
            members = [m for m in tf.getmembers() if m.isfile()]
            base = {os.path.basename(m.name): m for m in members}
            if "data_batch_1.bin" in base:
                return _from_bin(lambda n: tf.extractfile(base[n]).read(), set(base), where)
            entries = [(m.name.split("/"), tf.extractfile(m).read()) for m in members
                       if m.name.lower().endswith(IMAGE_EXT)]
        return _split_images(entries, where)
    if not os.path.isdir(where):
        die(f"--data {where}: no such file or directory")
    for sub in ("", "cifar-10-batches-bin"):
        d = os.path.join(where, sub)
        if os.path.isfile(os.path.join(d, "data_batch_1.bin")):
            names = set(os.listdir(d))

            def read(n, d=d):
                with open(os.path.join(d, n), "rb") as f:
                    return f.read()
            return _from_bin(read, names, where)
    root = where
    if not os.path.isdir(os.path.join(root, "train")) and \
            os.path.isdir(os.path.join(root, "cifar10-jpeg", "train")):
        root = os.path.join(root, "cifar10-jpeg")
    entries = []
    for split in ("train", "test"):
        sd = os.path.join(root, split)
        if not os.path.isdir(sd):
            die(f"--data {where}: neither cifar-10-batches-bin nor {split}/<class>/ found")
        for cname in sorted(os.listdir(sd)):
            cd = os.path.join(sd, cname)
            if os.path.isdir(cd):
                for fname in os.listdir(cd):
                    entries.append(([split, cname, fname], os.path.join(cd, fname)))
    return _split_images(entries, where)


def cifar_default_data():
    for p in CIFAR_DEFAULT:
        if os.path.exists(p):
            return p
    die("no CIFAR-10 found; give --data (tried " + ", ".join(CIFAR_DEFAULT) + ")")


# --------------------------------------------------------------------------------------------
# machine, library and BLAS facts

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loaded_libraries(patterns=("blas", "lapack", "mkl", "dnnl", "gomp", "iomp", "cudnn",
                               "cublas")):
    """Shared libraries mapped into this process whose name matches one of the patterns,
    with the real file they resolve to (tells OpenBLAS from the reference BLAS)."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5].startswith("/"):
                    base = os.path.basename(parts[5]).lower()
                    if any(p in base for p in patterns):
                        libs.add(parts[5])
    except OSError:
        pass
    return sorted(os.path.realpath(x) for x in libs)


def sgemm_provider():
    """The file that provides sgemm_ to PyTorch: libtorch_cpu.so needs libblas.so.3 ahead of
    any other BLAS, so dlopen("libblas.so.3") returns the copy already loaded and dladdr() on
    its sgemm_ names the real file (OpenBLAS, or Debian's slow reference BLAS)."""
    import ctypes
    import ctypes.util

    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]
    try:
        libdl = ctypes.CDLL(ctypes.util.find_library("dl") or "libc.so.6")
        libdl.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
        for soname in ("libblas.so.3", "libopenblas.so.0", "libmkl_rt.so"):
            if not any(os.path.basename(l).startswith(soname.split(".so")[0] + ".so")
                       for l in _mapped_paths()):
                continue
            lib = ctypes.CDLL(soname)
            addr = ctypes.cast(lib.sgemm_, ctypes.c_void_p).value
            info = DlInfo()
            if addr and libdl.dladdr(addr, ctypes.byref(info)) and info.dli_fname:
                return os.path.realpath(info.dli_fname.decode())
    except Exception:
        pass
    return None


def _mapped_paths():
    out = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5].startswith("/"):
                    out.add(parts[5])
    except OSError:
        pass
    return out


def blas_info():
    libs = loaded_libraries(("blas", "lapack", "mkl"))
    prov = sgemm_provider()
    what = prov or " ".join(libs)
    if "openblas" in what:
        kind = "openblas"
    elif "libmkl" in what:
        kind = "mkl"
    elif "blis" in what:
        kind = "blis"
    elif prov and "/blas/" in prov:
        kind = "reference (netlib, slow)"
    elif prov:
        kind = "other: " + os.path.basename(prov)
    else:
        kind = "no sgemm_ found in a shared library (static MKL or none)"
    cfg = ""
    try:
        for tok in torch.__config__.show().replace("\n", ",").split(","):
            if "BLAS_INFO" in tok:
                cfg = tok.strip().replace("- Build settings: ", "")
    except Exception:
        pass
    env = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                      "OMP_NUM_THREADS", "LD_PRELOAD", "LD_LIBRARY_PATH")
           if k in os.environ}
    return {"kind": kind, "sgemm_provider": prov, "libraries": libs, "torch_build": cfg,
            "env": env}


def git_revision():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip() or None
    except Exception:
        return None


def machine_info(dev):
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    m = {"hostname": socket.gethostname(), "os": platform.platform(),
         "cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": affinity,
         "python": sys.version.split()[0]}
    try:
        m["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            m["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except Exception:
        pass
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        m["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}",
                    "multiprocessors": p.multi_processor_count}
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader",
                                  "-i", str(dev.index or 0)], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
            if out:
                m["gpu"]["driver"] = out
        except Exception:
            pass
    return m


def versions():
    v = {"torch": torch.__version__, "python": sys.version.split()[0]}
    try:
        import numpy
        v["numpy"] = numpy.__version__
    except ImportError:
        pass
    if torch.version.cuda:
        v["cuda"] = torch.version.cuda
    try:
        if torch.backends.cudnn.is_available():
            v["cudnn"] = torch.backends.cudnn.version()
    except Exception:
        pass
    try:
        import torchvision
        v["torchvision"] = torchvision.__version__
    except Exception:
        pass
    return v


def device_record(dev):
    if dev.type == "cuda":
        return {"kind": "cuda", "index": dev.index, "name": torch.cuda.get_device_name(dev)}
    return {"kind": "cpu", "name": cpu_model(), "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------------------------
# utilisation sampler (CPU busy % from /proc/stat, GPU busy % and memory via NVML if present)

class UtilSampler:
    def __init__(self, dev, period=0.2):
        self.period = period
        self.timeline = []
        self._stop = threading.Event()
        self._nvml = None
        if dev.type == "cuda":
            try:
                import pynvml
                pynvml.nvmlInit()
                self._nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(dev.index or 0))
            except Exception:
                self._nvml = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu_times():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v[:8]), idle

    def start(self):
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def _run(self):
        try:
            last = self._cpu_times()
        except OSError:
            return
        while not self._stop.wait(self.period):
            s = {"t": round(time.perf_counter() - self.t0, 3)}
            try:
                cur = self._cpu_times()
                dt, di = cur[0] - last[0], cur[1] - last[1]
                last = cur
                s["cpu_busy_pct"] = round(100.0 * (dt - di) / dt, 1) if dt > 0 else None
            except OSError:
                pass
            if self._nvml:
                nv, h = self._nvml
                try:
                    s["gpu_busy_pct"] = nv.nvmlDeviceGetUtilizationRates(h).gpu
                    s["gpu_mem_mib"] = round(nv.nvmlDeviceGetMemoryInfo(h).used / 2**20)
                except Exception:
                    pass
            self.timeline.append(s)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        mean = {}
        for k in ("cpu_busy_pct", "gpu_busy_pct", "gpu_mem_mib"):
            xs = [s[k] for s in self.timeline if s.get(k) is not None]
            if xs:
                mean[k] = round(sum(xs) / len(xs), 1)
        return {"mean": mean, "timeline": self.timeline, "period_s": self.period,
                "gpu_source": "nvml (pynvml)" if self._nvml else None}


# --------------------------------------------------------------------------------------------
# the training / test loop, shared by both workloads

def run_training(*, model, opt, dev, args, x_train, y_train, x_test, y_test, prepare,
                 log=print):
    """x_*: tensors on `dev` holding the whole data set (raw form); prepare(xb, train) turns a
    raw batch into the model input (normalise, augment, memory format) on the device.
    Returns a dict with times, losses, accuracies, step counts."""
    n = x_train.shape[0]
    b = args.batch
    steps_per_epoch, planned, steady_from = plan_steps(n, args)
    gen = torch.Generator()                     # CPU generator: same shuffle on every device
    gen.manual_seed(args.seed)
    ac = autocast_ctx(dev, args.precision)
    metrics = not args.no_train_metrics

    xs = torch.empty_like(x_train)
    ys = torch.empty_like(y_train)
    epoch_times, epoch_losses, epoch_acc = [], [], []
    step = 0
    images_total = 0
    images_steady = 0
    t_steady = None
    sync(dev)
    t_train0 = time.perf_counter()
    for epoch in range(args.epochs):
        if step >= planned:
            break
        te0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen).to(dev, non_blocking=True)
        # one gather per epoch into buffers reused every epoch (no new pages to fault in),
        # then contiguous batch slices
        torch.index_select(x_train, 0, perm, out=xs)
        torch.index_select(y_train, 0, perm, out=ys)
        loss_sum = torch.zeros((), device=dev, dtype=torch.float32)
        correct = torch.zeros((), device=dev, dtype=torch.int64)
        seen = 0
        for i in range(0, n, b):
            if step >= planned:
                break
            if step == steady_from:
                sync(dev)
                t_steady = time.perf_counter()
            xb = prepare(xs[i:i + b], True)
            yb = ys[i:i + b]
            with ac:
                logits = model(xb)
                loss = torch.nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            nb = yb.shape[0]
            if metrics:
                loss_sum.add_(loss.detach().float(), alpha=nb)
                correct.add_((logits.detach().argmax(1) == yb).sum())
            seen += nb
            step += 1
            images_total += nb
            if t_steady is not None:
                images_steady += nb
        sync(dev)
        te = time.perf_counter() - te0
        epoch_times.append(te)
        el = loss_sum.item() / max(seen, 1) if metrics else float("nan")
        ea = correct.item() / max(seen, 1) if metrics else float("nan")
        epoch_losses.append(el)
        epoch_acc.append(ea)
        if not args.quiet:
            log(epoch_line(args, epoch, seen, te, el, ea, step, planned), flush=True)
    t_train_end = time.perf_counter()
    train_s = t_train_end - t_train0
    steady_s = (t_train_end - t_steady) if t_steady is not None else None

    # test pass, BN in eval mode
    sync(dev)
    tt0 = time.perf_counter()
    model.eval()
    nt = x_test.shape[0]
    tl = torch.zeros((), device=dev, dtype=torch.float32)
    tc = torch.zeros((), device=dev, dtype=torch.int64)
    with torch.no_grad():
        for i in range(0, nt, args.test_batch):
            xb = prepare(x_test[i:i + args.test_batch], False)
            yb = y_test[i:i + args.test_batch]
            with ac:
                logits = model(xb)
                tl += torch.nn.functional.cross_entropy(logits.float(), yb, reduction="sum")
            tc += (logits.argmax(1) == yb).sum()
    sync(dev)
    test_s = time.perf_counter() - tt0
    return training_result(args, log, step, planned, steps_per_epoch, steady_from, train_s,
                           steady_s, epoch_times, epoch_losses, epoch_acc, images_total,
                           images_steady, nt, test_s, tl.item(), tc.item())


def training_result(args, log, step, planned, steps_per_epoch, steady_from, train_s, steady_s,
                    epoch_times, epoch_losses, epoch_acc, images_total, images_steady, nt, test_s,
                    test_loss_sum, test_correct):
    """Logs the test line; returns the dict of both training loops (run_training*)."""
    test_loss, test_acc = test_loss_sum / nt, test_correct / nt
    if not args.quiet:
        log(f"test: {nt} images, {test_s:.3f} s, loss {test_loss:.4f}, accuracy {test_acc:.4f}",
            flush=True)
    return {"steps": step, "planned_steps": planned, "steps_per_epoch": steps_per_epoch,
            "steady_from_step": steady_from, "stopped_early": step < steps_per_epoch * args.epochs,
            "train_s": train_s, "test_s": test_s, "epoch_times": epoch_times,
            "epoch_losses": epoch_losses, "epoch_acc": epoch_acc,
            "images_total": images_total, "images_steady": images_steady, "steady_s": steady_s,
            "test_loss": test_loss, "test_acc": test_acc}


def finish_record(rec, args, flops):
    """Adds the workload's FLOP counts to rec["flops"], writes the record, prints its summary."""
    rec["flops"].update(flops)
    write_record(rec, args.out)
    print(summary_line(rec), flush=True)


def torch_fields(dev):
    """What build_record records of the framework (PyTorch here; keras_fields for Keras)."""
    return {"peer": "pytorch", "version": {"torch_version": torch.__version__},
            "device": device_record(dev), "threads": torch.get_num_threads(),
            "versions": versions(), "blas": blas_info()}


def plan_steps(n, args):
    """-> (steps per epoch, planned steps, first steady step) for n training images."""
    steps_per_epoch = math.ceil(n / args.batch)   # last partial batch kept
    planned = steps_per_epoch * args.epochs
    if args.steps:
        planned = min(planned, args.steps)
    return steps_per_epoch, planned, math.ceil(0.05 * planned)


def epoch_line(args, epoch, seen, te, el, ea, step, planned):
    return (f"epoch {epoch + 1}/{args.epochs}: {seen} images, {te:.3f} s, "
            f"{seen / te:.1f} img/s, loss {el:.4f}, accuracy {ea:.4f}"
            + (f" (stopped after {step} steps)" if step >= planned and args.steps else ""))


def build_record(*, args, dev, workload, load_s, r, flops_per_train_image, util, extra,
                 framework=None):
    fw = framework or torch_fields(dev)
    thr = r["images_total"] / r["train_s"] if r["train_s"] > 0 else None
    thr_steady = (r["images_steady"] / r["steady_s"]
                  if r["steady_s"] and r["images_steady"] else None)
    rec = {
        "peer": fw["peer"],
        **fw["version"],
        "workload": workload,
        "device": fw["device"],
        "precision": args.precision,
        "batch": args.batch,
        "test_batch": args.test_batch,
        "epochs": args.epochs,
        "epochs_run": len(r["epoch_times"]),
        "steps": r["steps"],
        "steps_per_epoch": r["steps_per_epoch"],
        "steps_limit": args.steps or None,
        "stopped_early": r["stopped_early"],
        "lr": args.lr,
        "seed": args.seed,
        "threads": fw["threads"],
        "times_s": {"load": load_s, "train": r["train_s"], "test": r["test_s"],
                    "train_test": r["train_s"] + r["test_s"], "epochs": r["epoch_times"]},
        "throughput": {"train_images_per_s": thr, "train_images_per_s_steady": thr_steady,
                       "steady_from_step": r["steady_from_step"]},
        "accuracy": {"train": r["epoch_acc"][-1] if r["epoch_acc"] else None,
                     "train_epochs": r["epoch_acc"], "test": r["test_acc"]},
        "loss": {"epochs": r["epoch_losses"],
                 "train": r["epoch_losses"][-1] if r["epoch_losses"] else None,
                 "test": r["test_loss"]},
        "flops": {"per_train_image": flops_per_train_image,
                  "achieved_per_s": (flops_per_train_image * thr_steady) if thr_steady else None},
        "utilisation": util,
        "machine": machine_info(dev),
        "versions": fw["versions"],
        "blas": fw["blas"],
        "command": " ".join([sys.executable] + sys.argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "trainbench_git_revision": git_revision(),
    }
    rec.update(extra)
    return rec


def _json_clean(x):
    """NaN / inf are not JSON: write null instead."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_clean(v) for v in x]
    return x


def write_record(rec, path):
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_json_clean(rec), f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def summary_line(rec):
    t = rec["times_s"]
    version = rec.get("torch_version") or rec.get("tensorflow_version")
    return (f"{rec['workload']} {rec['peer']} {version} on {rec['device']['name']} "
            f"({rec['device']['kind']}, {rec['precision']}): train {t['train']:.2f} s, "
            f"test {t['test']:.2f} s, train+test {t['train_test']:.2f} s, "
            f"{rec['throughput']['train_images_per_s']:.1f} img/s "
            f"(steady {rec['throughput']['train_images_per_s_steady'] or float('nan'):.1f}), "
            f"test accuracy {rec['accuracy']['test']:.4f}")


# --------------------------------------------------------------------------------------------
# Keras peers (bench/peers/*_keras.py): TensorFlow 2 + Keras 3, CPU

tf = None      # set by import_tf()
keras = None


class CpuDevice:
    """What machine_info() and UtilSampler need of a device, for the Keras peers."""
    type = "cpu"
    index = None


def import_tf(args):
    """Imports TensorFlow and Keras after the options are parsed; applies --threads (intra- and
    inter-op pools), the seed and --precision. Returns a CpuDevice."""
    global tf, keras
    if args.device != "cpu":
        die(f"--device {args.device}: the Keras peers run on the CPU only (tensorflow-cpu)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import tensorflow as _tf
    import keras as _keras
    tf, keras = _tf, _keras
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    if args.precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    return CpuDevice()


def make_keras_adam(args):
    # Keras adds eps to sqrt(v) before the bias correction of the step size ("epsilon hat");
    # PyTorch adds it to sqrt(v_hat). WORKLOADS.md's eps 1e-7 is Keras' own default.
    opt = keras.optimizers.Adam(learning_rate=args.lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    return opt


def keras_fields(args):
    import numpy
    threads = args.threads or os.cpu_count()
    return {"peer": "keras",
            "version": {"tensorflow_version": tf.__version__, "keras_version": keras.__version__},
            "device": {"kind": "cpu", "name": cpu_model(), "threads": threads},
            "threads": threads,
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                         "numpy": numpy.__version__, "python": sys.version.split()[0],
                         "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")},
            "blas": {"kind": "TensorFlow built-in (Eigen / oneDNN)", "sgemm_provider": None,
                     "libraries": loaded_libraries()}}


def run_training_keras(*, model, opt, args, x_train, y_train, x_test, y_test, prepare,
                       log=print):
    """The Keras twin of run_training: x_*, y_* are tf tensors holding the whole set (raw form),
    prepare(xb, train) runs inside the compiled step. Each epoch: a seeded numpy permutation,
    one tf.gather into a shuffled copy, contiguous batch slices (last partial batch kept), one
    tf.function train step per batch (GradientTape + Adam); loss and accuracy accumulate in
    variables and are read once per epoch. Returns the same dict as run_training."""
    import numpy as np
    n = int(x_train.shape[0])
    b = args.batch
    steps_per_epoch, planned, steady_from = plan_steps(n, args)
    rng = np.random.default_rng(args.seed)
    metrics = not args.no_train_metrics
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss_sum = tf.Variable(0.0, dtype=tf.float32, trainable=False)
    correct = tf.Variable(0, dtype=tf.int64, trainable=False)
    tvars = model.trainable_variables
    opt.build(tvars)
    xspec = tf.TensorSpec([None] + list(x_train.shape[1:]), x_train.dtype)
    yspec = tf.TensorSpec([None], y_train.dtype)

    def hits(logits, yb):
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=yb.dtype), yb),
                                     tf.int64))

    @tf.function(input_signature=[xspec, yspec], jit_compile=args.jit_compile)
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(prepare(xb, True), training=True), tf.float32)
            loss = loss_fn(yb, logits)
        opt.apply_gradients(zip(tape.gradient(loss, tvars), tvars))
        if metrics:
            loss_sum.assign_add(loss * tf.cast(tf.shape(yb)[0], tf.float32))
            correct.assign_add(hits(logits, yb))

    @tf.function(input_signature=[xspec, yspec])
    def test_step(xb, yb):
        logits = tf.cast(model(prepare(xb, False), training=False), tf.float32)
        return (tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(yb, logits,
                                                                           from_logits=True)),
                hits(logits, yb))

    epoch_times, epoch_losses, epoch_acc = [], [], []
    step = images_total = images_steady = 0
    t_steady = None
    t_train0 = time.perf_counter()
    for epoch in range(args.epochs):
        if step >= planned:
            break
        te0 = time.perf_counter()
        perm = tf.constant(rng.permutation(n))
        xs, ys = tf.gather(x_train, perm), tf.gather(y_train, perm)
        loss_sum.assign(0.0)
        correct.assign(0)
        seen = 0
        for i in range(0, n, b):
            if step >= planned:
                break
            if step == steady_from:
                t_steady = time.perf_counter()
            train_step(xs[i:i + b], ys[i:i + b])    # on CPU the call returns when it is done
            nb = min(b, n - i)
            seen, step, images_total = seen + nb, step + 1, images_total + nb
            images_steady += nb if t_steady is not None else 0
        epoch_losses.append(float(loss_sum.numpy()) / max(seen, 1) if metrics else float("nan"))
        epoch_acc.append(int(correct.numpy()) / max(seen, 1) if metrics else float("nan"))
        epoch_times.append(time.perf_counter() - te0)
        if not args.quiet:
            log(epoch_line(args, epoch, seen, epoch_times[-1], epoch_losses[-1], epoch_acc[-1],
                           step, planned), flush=True)
    t_end = time.perf_counter()
    train_s, steady_s = t_end - t_train0, (t_end - t_steady) if t_steady is not None else None

    tt0 = time.perf_counter()
    nt = int(x_test.shape[0])
    tl, tc = 0.0, 0
    for i in range(0, nt, args.test_batch):
        l, c = test_step(x_test[i:i + args.test_batch], y_test[i:i + args.test_batch])
        tl += float(l.numpy())
        tc += int(c.numpy())
    test_s = time.perf_counter() - tt0
    return training_result(args, log, step, planned, steps_per_epoch, steady_from, train_s,
                           steady_s, epoch_times, epoch_losses, epoch_acc, images_total,
                           images_steady, nt, test_s, tl, tc)
