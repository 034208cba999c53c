"""PyTorch peer of trainbench's `resnet50-cifar10` workload (see /work/shared/WORKLOADS.md).

ResNet-50 v1.5 = torchvision.models.resnet50(num_classes=10) when torchvision is importable,
else the exact copy below (same module names, construction order, initialisation: the same seed
gives the same weights). 32x32 CIFAR-10 images fed unchanged; pixels / 255 then per-channel
(x - mean) / std; softmax cross-entropy; Adam lr 1e-3, betas (0.9, 0.999), eps 1e-7; batch 128
(last partial batch kept); 10 epochs; new shuffle every epoch; --augment: pad-4 random crop and
horizontal flip on the tensor batch; test pass with BN in eval mode.

Data (--data): the official binary folder (cifar-10-batches-bin, or its .tar.gz), an image-folder
root (train/<class>/*.jpg, test/<class>/*.jpg), or the .tar.gz of that folder
(/work/shared/data/cifar10-jpeg.tar.gz, top folder cifar10-jpeg/). JPEGs are decoded once with
PIL into a uint8 tensor; the uint8 set stays on the device (GPU memory on CUDA) and each batch is
sliced, augmented and normalised there.

    python3 bench/peers/resnet50_cifar10_torch.py --data /work/shared/data/cifar10-jpeg.tar.gz \
        [--device cuda] [--precision fp32|tf32|bf16] [--channels-last] [--compile] [--steps N]
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402

WORKLOAD = "resnet50-cifar10"
MEAN, STD = pc.CIFAR_MEAN, pc.CIFAR_STD
PARAMS, MACS_FORWARD, MACS_CONV1 = pc.RESNET50_PARAMS, pc.RESNET50_MACS, pc.RESNET50_MACS_CONV1


# --------------------------------------------------------------------------------------------
# data: read by pc.load_cifar_raw (shared with the Keras peer), wrapped as uint8 NCHW tensors

def load_cifar(where):
    torch = pc.torch
    out = []
    for buf, layout, labels in pc.load_cifar_raw(where):
        n = len(labels)
        x = torch.frombuffer(buf, dtype=torch.uint8)
        x = x.view(n, 3, 32, 32) if layout == "chw" else x.view(n, 32, 32, 3).permute(0, 3, 1, 2)
        out += [x.contiguous(), torch.tensor(labels, dtype=torch.long)]
    return out


default_data = pc.cifar_default_data


# --------------------------------------------------------------------------------------------
# model: torchvision's ResNet-50, or an exact copy of it

def _local_resnet50(num_classes):
    nn = pc.torch.nn

    def conv3x3(i, o, stride=1):
        return nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False)

    def conv1x1(i, o, stride=1):
        return nn.Conv2d(i, o, 1, stride=stride, bias=False)

    class Bottleneck(nn.Module):       # torchvision v1.5: stride on the 3x3 conv
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            width = planes
            self.conv1 = conv1x1(inplanes, width)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = conv3x3(width, width, stride)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = conv1x1(width, planes * self.expansion)
            self.bn3 = nn.BatchNorm2d(planes * self.expansion)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    class ResNet(nn.Module):
        def __init__(self, layers=(3, 4, 6, 3), num_classes=1000):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(64, layers[0])
            self.layer2 = self._make_layer(128, layers[1], stride=2)
            self.layer3 = self._make_layer(256, layers[2], stride=2)
            self.layer4 = self._make_layer(512, layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

        def _make_layer(self, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
                downsample = nn.Sequential(
                    conv1x1(self.inplanes, planes * Bottleneck.expansion, stride),
                    nn.BatchNorm2d(planes * Bottleneck.expansion))
            layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * Bottleneck.expansion
            for _ in range(1, blocks):
                layers.append(Bottleneck(self.inplanes, planes))
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = pc.torch.flatten(self.avgpool(x), 1)
            return self.fc(x)

    return ResNet(num_classes=num_classes)


def build_model(impl):
    """impl: auto | torchvision | local. Returns (model, impl used)."""
    if impl in ("auto", "torchvision"):
        try:
            import torchvision
            return torchvision.models.resnet50(num_classes=10), \
                f"torchvision {torchvision.__version__}"
        except ImportError as e:
            if impl == "torchvision":
                pc.die(f"--model torchvision: {e}")
    return _local_resnet50(10), "in-file copy of torchvision resnet50"


def count_macs(model):
    """Multiply-adds of one 32x32 forward pass (conv + linear), counted with hooks."""
    torch = pc.torch
    nn = torch.nn
    total = {"conv": 0, "linear": 0}

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            total["conv"] += out[0].numel() * k
        else:
            total["linear"] += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()                      # eval: running statistics untouched
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    model.train(was_training)
    for h in hs:
        h.remove()
    return total["conv"], total["linear"]


# --------------------------------------------------------------------------------------------

def main():
    p = pc.base_parser(__doc__.split("\n")[0], WORKLOAD, batch=128, epochs=10)
    p.add_argument("--augment", action="store_true",
                   help="pad-4 random crop + horizontal flip (on the device, per batch)")
    p.add_argument("--channels-last", action="store_true",
                   help="model and input in torch.channels_last memory format")
    p.add_argument("--model", default="auto", choices=["auto", "torchvision", "local"],
                   help="auto: torchvision if importable, else the in-file copy")
    p.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="leave torch.backends.cudnn.benchmark off (default: on for CUDA)")
    p.add_argument("--cache", default=None,
                   help="torch.save the decoded uint8 data set here, or load it if present "
                        "(skips JPEG decoding; load time then measures the cache)")
    args = p.parse_args()
    if args.data is None and not (args.cache and os.path.isfile(args.cache)):
        args.data = default_data()
    pc.check_common_args(args)
    dev = pc.import_torch(args)
    torch = pc.torch
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    util = None if args.no_util else pc.UtilSampler(dev).start()

    # ---- data: decoded once to uint8 NCHW, kept on the device
    pc.sync(dev)
    t0 = time.perf_counter()
    d = None
    if args.cache and os.path.isfile(args.cache):
        try:
            d = torch.load(args.cache)
            xtr, ytr, xte, yte = d["xtr"], d["ytr"], d["xte"], d["yte"]
        except Exception as e:
            pc.die(f"--cache {args.cache}: cannot load: {e}")
        if args.data and d.get("source") != os.path.abspath(args.data):
            d = None                   # cache of another data set: decode again, overwrite
    if d is not None:
        source = f"cache {args.cache} (of {d.get('source')})"
    else:
        xtr, ytr, xte, yte = load_cifar(args.data)
        source = os.path.abspath(args.data)
        if args.cache:
            torch.save({"xtr": xtr, "ytr": ytr, "xte": xte, "yte": yte, "source": source},
                       args.cache)
    if xtr.shape[1:] != (3, 32, 32) or xtr.dtype != torch.uint8:
        pc.die(f"data: expected uint8 N x 3 x 32 x 32, got {xtr.dtype} {tuple(xtr.shape)}")
    xtr, ytr, xte, yte = (t.to(dev) for t in (xtr, ytr, xte, yte))
    pc.sync(dev)
    load_s = time.perf_counter() - t0
    if not args.quiet:
        print(f"loaded {xtr.shape[0]} train / {xte.shape[0]} test images from {source} in "
              f"{load_s:.2f} s; torch {torch.__version__}, device {dev}, "
              f"{torch.get_num_threads()} threads, BLAS {pc.blas_info()['kind']}", flush=True)

    # ---- model
    torch.manual_seed(args.seed)
    model, model_impl = build_model(args.model)
    nparams = sum(q.numel() for q in model.parameters())
    assert nparams == PARAMS, f"ResNet-50 has {nparams} parameters, expected {PARAMS}"
    macs_conv, macs_fc = count_macs(model)
    assert macs_conv + macs_fc == MACS_FORWARD, (macs_conv, macs_fc)
    mf = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(dev, memory_format=mf)
    opt, adam_impl = pc.make_adam(model.parameters(), args, dev)
    model_run = pc.maybe_compile(model, args)
    if not args.quiet:
        print(f"model: {model_impl}, {nparams:,} parameters, {MACS_FORWARD:,} MACs/image "
              f"forward; Adam {adam_impl}; {args.precision}"
              f"{', channels-last' if args.channels_last else ''}"
              f"{', compiled' if args.compile else ''}"
              f"{', augment' if args.augment else ''}", flush=True)

    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    aug_gen = torch.Generator(device=dev)
    aug_gen.manual_seed(args.seed + 1)
    ar = torch.arange(32, device=dev)

    def augment(xb):          # uint8 B x 3 x 32 x 32 -> pad 4 (zeros), random 32x32 crop, flip
        bsz = xb.shape[0]
        xp = torch.nn.functional.pad(xb, (4, 4, 4, 4))
        oy = torch.randint(0, 9, (bsz,), device=dev, generator=aug_gen)
        ox = torch.randint(0, 9, (bsz,), device=dev, generator=aug_gen)
        flip = torch.rand(bsz, device=dev, generator=aug_gen) < 0.5
        rows = (oy[:, None] + ar)[:, None, :, None]                      # B,1,32,1
        cols = ox[:, None] + torch.where(flip[:, None], 31 - ar, ar)     # B,32
        bi = torch.arange(bsz, device=dev)[:, None, None, None]
        ci = torch.arange(3, device=dev)[None, :, None, None]
        return xp[bi, ci, rows, cols[:, None, None, :]]

    def prepare(xb, train):
        if train and args.augment:
            xb = augment(xb)
        x = xb.float().div_(255.0).sub_(mean).div_(std)
        return x.contiguous(memory_format=mf)

    r = pc.run_training(model=model_run, opt=opt, dev=dev, args=args, x_train=xtr, y_train=ytr,
                        x_test=xte, y_test=yte, prepare=prepare)
    util_rec = util.stop() if util else None
    rec = pc.build_record(
        args=args, dev=dev, workload=WORKLOAD, load_s=load_s, r=r,
        flops_per_train_image=2 * 3 * MACS_FORWARD, util=util_rec,
        extra={"parameters": nparams, "data": source, "augment": args.augment,
               "peer_options": {"model": model_impl, "channels_last": args.channels_last,
                                "compile": args.compile, "compile_mode": args.compile_mode,
                                "adam": adam_impl, "train_metrics": not args.no_train_metrics,
                                "flush_denormal": args.flush_denormal,
                                "cudnn_benchmark": (dev.type == "cuda"
                                                    and not args.no_cudnn_benchmark),
                                "data_feed": "uint8 set on the device, per-epoch index_select "
                                             "shuffle, per-batch normalise on the device"}})
    rec["flops"].update({
        "macs_forward_per_image": MACS_FORWARD, "macs_forward_conv": macs_conv,
        "per_train_image_contract": 2 * (3 * MACS_FORWARD - MACS_CONV1),
        "counting": "per_train_image = 2 FLOPs x 3 x forward MACs (83,431,424), nothing "
                    "subtracted; per_train_image_contract follows WORKLOADS.md (no input "
                    "gradient for the stem conv, -2,408,448 MACs); achieved_per_s uses "
                    "per_train_image and the steady throughput"})
    pc.write_record(rec, args.out)
    print(pc.summary_line(rec), flush=True)


if __name__ == "__main__":
    main()
