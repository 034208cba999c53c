"""PyTorch peer of trainbench's `fashion-mlp` workload (see /work/shared/WORKLOADS.md).

Fashion-MNIST from the gzip'd IDX files, pixels / 255 as float, flatten 784 -> 128 ReLU -> 10,
Glorot-uniform weights and zero biases, softmax cross-entropy (mean), Adam lr 1e-3,
betas (0.9, 0.999), eps 1e-7, batch 32, 10 epochs, new shuffle every epoch (torch.randperm with
a seeded generator), last partial batch kept, then one pass over the test set.

The whole data set lives in one tensor on the device; batches are contiguous slices of a
per-epoch shuffled copy (no DataLoader: the fastest honest way to feed this model).

    python3 bench/peers/fashion_mlp_torch.py [--device cpu|cuda] [--threads 2] [--out r.json]

Runs with PyTorch 1.13 (CPU) and 2.x (CUDA, --compile, --precision tf32|bf16).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402

WORKLOAD = "fashion-mlp"
DEFAULT_DATA = pc.FASHION_DEFAULT
# forward multiply-adds per image: 784*128 + 128*10
MACS_FORWARD = 784 * 128 + 128 * 10          # 101,632
MACS_FIRST_LAYER = 784 * 128                 # its input gradient is not computed


def load(data_dir, dev):
    """The checked IDX files (pc.load_fashion_raw) -> tensors on dev; pixels / 255 as float32,
    no other normalisation."""
    torch = pc.torch
    xtr, ytr, xte, yte = (torch.frombuffer(buf, dtype=torch.uint8).reshape(*dims)
                          for buf, dims in pc.load_fashion_raw(data_dir))
    xtr = xtr.to(dev).float().div_(255.0).contiguous()
    xte = xte.to(dev).float().div_(255.0).contiguous()
    ytr = ytr.to(dev).long()
    yte = yte.to(dev).long()
    return xtr, ytr, xte, yte


def build_model():
    nn = pc.torch.nn
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)     # Glorot-uniform
            nn.init.zeros_(m.bias)
    return model


def main():
    p = pc.base_parser(__doc__.split("\n")[0], WORKLOAD, batch=32, epochs=10)
    args = p.parse_args()
    if args.data is None:
        args.data = DEFAULT_DATA
    pc.check_common_args(args)
    dev = pc.import_torch(args)
    torch = pc.torch
    util = None if args.no_util else pc.UtilSampler(dev).start()

    pc.sync(dev)
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = load(args.data, dev)
    pc.sync(dev)
    load_s = time.perf_counter() - t0
    if not args.quiet:
        print(f"loaded {xtr.shape[0]} train / {xte.shape[0]} test images from {args.data} "
              f"in {load_s:.3f} s; torch {torch.__version__}, device {dev}, "
              f"{torch.get_num_threads()} threads, BLAS {pc.blas_info()['kind']}", flush=True)

    torch.manual_seed(args.seed)
    model = build_model().to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    assert nparams == 101770, nparams
    opt, adam_impl = pc.make_adam(model.parameters(), args, dev)
    model_run = pc.maybe_compile(model, args)

    r = pc.run_training(model=model_run, opt=opt, dev=dev, args=args, x_train=xtr, y_train=ytr,
                        x_test=xte, y_test=yte, prepare=lambda xb, train: xb)
    util_rec = util.stop() if util else None
    flops_3x = 2 * 3 * MACS_FORWARD
    flops_contract = 2 * (3 * MACS_FORWARD - MACS_FIRST_LAYER)
    rec = pc.build_record(
        args=args, dev=dev, workload=WORKLOAD, load_s=load_s, r=r,
        flops_per_train_image=flops_3x, util=util_rec,
        extra={"parameters": nparams, "data": os.path.abspath(args.data),
               "peer_options": {"compile": args.compile, "compile_mode": args.compile_mode,
                                "adam": adam_impl, "train_metrics": not args.no_train_metrics,
                                "flush_denormal": args.flush_denormal,
                                "data_feed": "whole set in one device tensor, per-epoch "
                                             "index_select shuffle, contiguous batch slices"}})
    rec["flops"].update({
        "macs_forward_per_image": MACS_FORWARD,
        "per_train_image_contract": flops_contract,
        "counting": "per_train_image = 2 FLOPs x 3 x forward MACs; per_train_image_contract "
                    "follows WORKLOADS.md (no input gradient for layer one); achieved_per_s "
                    "uses per_train_image and the steady throughput"})
    pc.write_record(rec, args.out)
    print(pc.summary_line(rec), flush=True)


if __name__ == "__main__":
    main()
