#!/usr/bin/python3
"""Weights that go from trainbench to PyTorch and back (safetensors, PyTorch's names).

    /usr/bin/python3 tests/train/torch_roundtrip.py TRAINBENCH WORK_DIR

Run by tests/train/torch_roundtrip_test.cpp where torch and torchvision import (Debian's
python3-torch and python3-torchvision). On small made-up data sets written to WORK_DIR (IDX files
for fashion-mlp, CIFAR-10 binaries for resnet50-cifar10):

  1. weights trained by trainbench (fashion-mlp 320 steps, resnet50-cifar10 2 steps), exported,
     load into the models PyTorch names them for (the MLP's nn.Sequential, torchvision's
     resnet50(num_classes=10)) with load_state_dict(strict=True), and give trainbench's logits;
  2. weights PyTorch made (its seeded init, batch-norm statistics from train-mode passes), saved
     without metadata, give PyTorch's logits in `trainbench evaluate` and are where `run --init`
     starts.
Each compares every test image's logits (max |difference| against the largest |logit|), the
test loss and the accuracy. Uses the `safetensors` package where it is installed, else the few
lines of the format below. Exits non-zero on the first figure out of tolerance.
"""
import gzip
import json
import os
import struct
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
# fp32 on both sides, summed in other orders: about 1e-6 of the logits' scale. A wrong layout,
# a swapped gamma/beta or a missed statistic moves them by O(1e-1..1).
LOGIT_TOL = 1e-4
LOSS_TOL = 1e-4  # relative

try:
    from safetensors.torch import load_file as st_load, save_file as st_save
except ImportError:
    DTYPES = {"F32": torch.float32, "I64": torch.int64}

    def st_load(path):
        with open(path, "rb") as f:
            blob = f.read()
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + n])
        header.pop("__metadata__", None)
        data = blob[8 + n:]
        out = {}
        for name, t in header.items():
            b, e = t["data_offsets"]
            out[name] = torch.frombuffer(bytearray(data[b:e]), dtype=DTYPES[t["dtype"]]).reshape(
                t["shape"]).clone()
        return out

    def st_save(tensors, path, metadata=None):
        header, blobs, at = {}, [], 0
        if metadata:
            header["__metadata__"] = metadata
        for name, t in tensors.items():
            raw = t.detach().contiguous().numpy().tobytes()
            dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
            header[name] = {"dtype": dtype, "shape": list(t.shape),
                            "data_offsets": [at, at + len(raw)]}
            blobs.append(raw)
            at += len(raw)
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def st_metadata(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)).get("__metadata__", {})


TB, WORK = sys.argv[1], sys.argv[2]
failures = []


def tb(*args):
    r = subprocess.run([TB, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"trainbench {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def check(what, ok, figure):
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {figure}")
    if not ok:
        failures.append(what)


# --- data: a class pattern plus noise, learnable in a few hundred steps ---------------------

def made_up_images(rng, count, shape, patterns):
    labels = rng.integers(0, 10, count)
    noise = rng.integers(0, 240, (count, *shape))
    return (patterns[labels] + noise).clip(0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_idx(path, array):
    dims = array.shape
    header = struct.pack(">I", 0x0800 | len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def fashion_data(folder):
    rng = np.random.default_rng(1)
    patterns = rng.integers(0, 40, (10, 28, 28))
    os.makedirs(folder, exist_ok=True)
    sets = {}
    for split, count, prefix in (("train", 2048, "train"), ("test", 512, "t10k")):
        images, labels = made_up_images(rng, count, (28, 28), patterns)
        write_idx(f"{folder}/{prefix}-images-idx3-ubyte.gz", images)
        write_idx(f"{folder}/{prefix}-labels-idx1-ubyte.gz", labels)
        sets[split] = (torch.from_numpy(images).float().div(255).unsqueeze(1),
                       torch.from_numpy(labels).long())
    return sets


def cifar_data(folder):
    rng = np.random.default_rng(2)
    patterns = rng.integers(0, 40, (10, 3, 32, 32))
    os.makedirs(folder, exist_ok=True)
    sets = {}
    for files, split in ((["data_batch_%d.bin" % i for i in range(1, 6)], "train"),
                         (["test_batch.bin"], "test")):
        per_file = 16 if split == "train" else 40
        all_images, all_labels = [], []
        for name in files:
            images, labels = made_up_images(rng, per_file, (3, 32, 32), patterns)
            records = np.concatenate([labels[:, None], images.reshape(per_file, -1)], axis=1)
            records.astype(np.uint8).tofile(f"{folder}/{name}")
            all_images.append(images), all_labels.append(labels)
        x = torch.from_numpy(np.concatenate(all_images)).float().div(255)
        x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        sets[split] = (x, torch.from_numpy(np.concatenate(all_labels)).long())
    return sets


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def resnet():
    return torchvision.models.resnet50(num_classes=10)


# --- the comparisons --------------------------------------------------------------------------

def compare(what, model, weights, data, workload):
    """trainbench's evaluate of `weights` against PyTorch's eval-mode forward of `model`."""
    logits_file, record = f"{WORK}/{what}.logits", f"{WORK}/{what}.json"
    args = ["evaluate", weights, "--data", data, "--logits", logits_file, "--out", record,
            "--deterministic"]
    if not st_metadata(weights):
        args += ["--workload", workload]
    tb(*args)
    x, labels = SETS[workload]["test"]
    model.eval()
    with torch.no_grad():
        want = model(x)
    got = torch.from_numpy(np.fromfile(logits_file, dtype="<f4")).reshape(want.shape)
    scale = want.abs().max().item()
    diff = (got - want).abs().max().item()
    check(f"{what}: logits", diff < LOGIT_TOL * scale,
          f"max |diff| {diff:.3g} = {diff / scale:.2e} of the largest |logit| {scale:.3g}")
    e = json.load(open(record))
    loss = F.cross_entropy(want, labels).item()
    check(f"{what}: test loss", abs(e["loss"] - loss) < LOSS_TOL * loss,
          f"trainbench {e['loss']:.6f}, PyTorch {loss:.6f}")
    # Both sides' argmax agree but where the top two are closer than the logits' difference;
    # trainbench's accuracy is a float32 ratio.
    top2 = want.topk(2, dim=1).values
    near_ties = int(((top2[:, 0] - top2[:, 1]) <= 2 * diff).sum())
    accuracy = (want.argmax(1) == labels).float().mean().item()
    check(f"{what}: accuracy", abs(e["accuracy"] - accuracy) <= near_ties / len(labels) + 1e-6,
          f"trainbench {e['accuracy']:.4f}, PyTorch {accuracy:.4f} ({near_ties} near ties)")
    return diff / scale


def trained_by_trainbench(workload, model, steps_args, updates):
    """(1) trainbench trains, exports; PyTorch loads strictly and gives the same logits."""
    data = DATA[workload]
    ckpt, weights = f"{WORK}/{workload}.tbck", f"{WORK}/{workload}.safetensors"
    tb("run", workload, "--data", data, *steps_args, "--checkpoint", ckpt, "--deterministic",
       "--no-peak", "--quiet", "--out", f"{WORK}/{workload}-run.json")
    tb("export", ckpt, "--out", weights)
    state = st_load(weights)
    model.load_state_dict(state, strict=True)  # raises on any missing, extra or misshapen key
    meta = st_metadata(weights)
    check(f"{workload}: metadata", meta.get("workload") == workload and meta.get("format") == "pt",
          json.dumps(meta))
    counts = {int(v) for k, v in state.items() if k.endswith("num_batches_tracked")}
    check(f"{workload}: num_batches_tracked", counts <= {updates}, f"{counts} (updates {updates})")
    return compare(f"trainbench-{workload}", model, weights, data, workload)


def made_by_pytorch(workload, model):
    """(2) PyTorch's weights, saved without metadata, in trainbench."""
    x, _ = SETS[workload]["train"]
    # Batch-norm statistics from train-mode passes, gamma and beta drawn: eval mode then tests
    # every one of the four (gamma 1, beta 0 would hide a swap).
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
        model.train()
        for first in range(0, len(x), 40):
            model(x[first:first + 40])
    weights = f"{WORK}/torch-{workload}.safetensors"
    st_save(model.state_dict(), weights)
    return weights, compare(f"pytorch-{workload}", model, weights, DATA[workload], workload)


def init_runs_from(workload, model, weights):
    """`run --init` starts from those weights: after one step at lr 1e-12, every trainable
    tensor is still PyTorch's (to about lr times the gradient, far below a rounding)."""
    ckpt, out = f"{WORK}/init-{workload}.tbck", f"{WORK}/init-{workload}.safetensors"
    tb("run", workload, "--data", DATA[workload], "--init", weights, "--steps", "1", "--batch", "16",
       "--optimizer",
       "sgd", "--lr", "1e-12", "--checkpoint", ckpt, "--no-peak", "--quiet", "--out",
       f"{WORK}/init-{workload}.json")
    tb("export", ckpt, "--out", out)
    got, want = st_load(out), dict(model.named_parameters())
    worst = max(((got[k] - p.detach()).abs().max() / p.detach().abs().max()).item()
                for k, p in want.items())
    check(f"run --init {workload}: parameters after one step", worst < 1e-6,
          f"max relative change {worst:.2e} over {len(want)} tensors")


torch.manual_seed(0)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
DATA = {"fashion-mlp": f"{WORK}/fashion", "resnet50-cifar10": f"{WORK}/cifar"}
SETS = {"fashion-mlp": fashion_data(DATA["fashion-mlp"]),
        "resnet50-cifar10": cifar_data(DATA["resnet50-cifar10"])}
figures = {
    "trainbench fashion-mlp": trained_by_trainbench("fashion-mlp", mlp(), ["--epochs", "5"], 320),
    "trainbench resnet50": trained_by_trainbench("resnet50-cifar10", resnet(),
                                                 ["--batch", "16", "--steps", "2"], 2),
}
for workload, model in (("fashion-mlp", mlp()), ("resnet50-cifar10", resnet())):
    weights, figures[f"pytorch {workload}"] = made_by_pytorch(workload, model)
    init_runs_from(workload, model, weights)
print("max |logit difference| / max |logit|: " +
      ", ".join(f"{k} {v:.2e}" for k, v in figures.items()))
if failures:
    print(f"{len(failures)} check(s) failed: {', '.join(failures)}")
    sys.exit(1)
