"""Keras peer of trainbench's `resnet50-cifar10` workload (see /work/shared/WORKLOADS.md).

ResNet-50 v1.5 built by hand to match torchvision's resnet50(num_classes=10), which the torch
peer runs, layer for layer: stem conv 7x7/2 (64) + BN + ReLU + max-pool 3x3/2 (pad 1);
bottlenecks 3, 4, 6, 3 of widths 64, 128, 256, 512 (x4), stride on the 3x3 conv, 1x1 conv + BN
projection on each stage's first block; global average pool; dense 2048 -> 10. Not
keras.applications.ResNet50: that is v1 (stride on the first 1x1 conv of the block), has conv
biases, BN eps 1.001e-5 and "same" padding, which TensorFlow places asymmetrically at stride 2.
Here every stride-2 conv with k > 1 gets torchvision's symmetric zero padding (ZeroPadding2D
k//2, then a "valid" conv), and the max-pool's padding is zeros (= torchvision's -inf padding,
its inputs being >= 0 after the ReLU). Checked: 23,528,522 trainable parameters and 83,431,424
forward multiply-adds per 32x32 image, as the torch peer.
BN: epsilon 1e-5, Keras momentum 0.9 (= PyTorch momentum 0.1). Init as torchvision: convs
Kaiming-normal fan_out ReLU (VarianceScaling 2.0, fan_out, untruncated normal), BN gamma 1 beta
0, dense kernel and bias uniform +-1/sqrt(2048) (PyTorch Linear's).
Remaining differences, TensorFlow's own: the BN moving variance is updated with the biased batch
variance (PyTorch: unbiased; a factor n/(n-1), n = batch x H x W, 128/127 in the last stage);
Keras' Adam puts epsilon on sqrt(v) before the bias correction (PyTorch: on sqrt(v_hat));
layout NHWC (TensorFlow's CPU layout; the torch peer runs --channels-last by default in
cpu_resnet50.sh); the shuffle order differs (numpy's generator). CPU only.

Data, normalisation, loss, optimiser, batch, epochs, shuffle, --augment and the test pass (BN in
inference mode) as bench/peers/resnet50_cifar10_torch.py; the same files (read by peer_common):
pixels / 255 then per channel (x - mean) / std, inside the compiled step on the uint8 batch.

    results/venv-keras/bin/python bench/peers/resnet50_cifar10_keras.py --data /work/data/cifar10 \
        [--threads 2] [--steps 10] [--cache results/cache/cifar10-u8-nhwc.npz] [--out r.json]
"""

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402

WORKLOAD = "resnet50-cifar10"
MEAN, STD = pc.CIFAR_MEAN, pc.CIFAR_STD
PARAMS, MACS_FORWARD, MACS_CONV1 = pc.RESNET50_PARAMS, pc.RESNET50_MACS, pc.RESNET50_MACS_CONV1


def build_resnet50(num_classes=10):
    keras = pc.keras
    L = keras.layers
    conv_init = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")

    def conv(x, filters, k, stride=1):
        pad = "same"
        if stride > 1 and k > 1:      # torchvision: k//2 zeros on every side
            x = L.ZeroPadding2D(k // 2)(x)
            pad = "valid"
        return L.Conv2D(filters, k, stride, padding=pad, use_bias=False,
                        kernel_initializer=conv_init)(x)

    def bn(x):
        return L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)

    def bottleneck(x, planes, stride, project):
        out = L.ReLU()(bn(conv(x, planes, 1)))
        out = L.ReLU()(bn(conv(out, planes, 3, stride)))      # v1.5: stride on the 3x3
        out = bn(conv(out, planes * 4, 1))
        identity = bn(conv(x, planes * 4, 1, stride)) if project else x
        return L.ReLU()(L.Add()([out, identity]))

    inp = keras.Input((32, 32, 3))
    x = L.ReLU()(bn(conv(inp, 64, 7, 2)))
    x = L.MaxPooling2D(3, 2)(L.ZeroPadding2D(1)(x))
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for j in range(blocks):
            x = bottleneck(x, planes, 2 if (stage > 0 and j == 0) else 1, j == 0)
    x = L.GlobalAveragePooling2D()(x)
    bound = 1.0 / math.sqrt(2048)
    out = L.Dense(num_classes,
                  kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
                  bias_initializer=keras.initializers.RandomUniform(-bound, bound))(x)
    return keras.Model(inp, out, name="resnet50_v1_5")


def count_macs(model):
    conv = dense = 0
    for layer in model.layers:
        if isinstance(layer, pc.keras.layers.Conv2D):
            _, h, w, c = layer.output.shape
            kh, kw, cin, _ = layer.kernel.shape
            conv += h * w * c * kh * kw * cin
        elif isinstance(layer, pc.keras.layers.Dense):
            dense += layer.kernel.shape[0] * layer.kernel.shape[1]
    return conv, dense


def load(args, np):
    """uint8 NHWC numpy arrays + int64 labels; --cache: np.savez of them, reused while --data is
    the same (the load time then measures the cache, not JPEG decoding)."""
    if args.cache and os.path.isfile(args.cache):
        try:
            d = np.load(args.cache)
            if not args.data or str(d["source"]) == os.path.abspath(args.data):
                return (d["xtr"], d["ytr"], d["xte"], d["yte"],
                        f"cache {args.cache} (of {d['source']})")
        except Exception as e:
            pc.die(f"--cache {args.cache}: cannot load: {e}")
    out = []
    for buf, layout, labels in pc.load_cifar_raw(args.data):
        x = np.frombuffer(buf, np.uint8)
        x = (x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) if layout == "chw"
             else x.reshape(-1, 32, 32, 3))
        out += [np.ascontiguousarray(x), np.asarray(labels, np.int64)]
    source = os.path.abspath(args.data)
    if args.cache:
        np.savez(args.cache, xtr=out[0], ytr=out[1], xte=out[2], yte=out[3], source=source)
    return (*out, source)


def main():
    p = pc.base_parser(__doc__.split("\n")[0], WORKLOAD, batch=128, epochs=10, framework="keras")
    p.add_argument("--augment", action="store_true",
                   help="pad-4 random crop + horizontal flip (per image, in the train step)")
    p.add_argument("--cache", default=None,
                   help="np.savez the decoded uint8 data set here (.npz), or load it if present")
    args = p.parse_args()
    if args.data is None and not (args.cache and os.path.isfile(args.cache)):
        args.data = pc.cifar_default_data()
    pc.check_common_args(args)
    dev = pc.import_tf(args)
    tf, keras = pc.tf, pc.keras
    import numpy as np
    util = None if args.no_util else pc.UtilSampler(dev).start()

    t0 = time.perf_counter()
    xtr, ytr, xte, yte, source = load(args, np)
    if xtr.shape[1:] != (32, 32, 3) or xtr.dtype != np.uint8:
        pc.die(f"data: expected uint8 N x 32 x 32 x 3, got {xtr.dtype} {xtr.shape}")
    xtr, ytr, xte, yte = (tf.constant(a) for a in (xtr, ytr, xte, yte))
    load_s = time.perf_counter() - t0
    if not args.quiet:
        print(f"loaded {xtr.shape[0]} train / {xte.shape[0]} test images from {source} in "
              f"{load_s:.2f} s; tensorflow {tf.__version__}, keras {keras.__version__}, "
              f"{args.threads or 'default'} threads", flush=True)

    model = build_resnet50(10)
    nparams = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    assert nparams == PARAMS, f"ResNet-50 has {nparams} parameters, expected {PARAMS}"
    macs_conv, macs_fc = count_macs(model)
    assert macs_conv + macs_fc == MACS_FORWARD, (macs_conv, macs_fc)
    opt = pc.make_keras_adam(args)
    if not args.quiet:
        print(f"model: hand-built ResNet-50 v1.5 (torchvision's), {nparams:,} parameters, "
              f"{MACS_FORWARD:,} MACs/image forward; Keras Adam; {args.precision}, NHWC"
              f"{', XLA' if args.jit_compile else ''}{', augment' if args.augment else ''}",
              flush=True)

    mean = tf.constant(MEAN, tf.float32)
    std = tf.constant(STD, tf.float32)
    aug_gen = tf.random.Generator.from_seed(args.seed + 1)
    ar = tf.range(32)

    def augment(xb):      # uint8 B x 32 x 32 x 3: pad 4 (zeros), random 32x32 crop, flip
        bsz = tf.shape(xb)[0]
        xp = tf.pad(xb, [[0, 0], [4, 4], [4, 4], [0, 0]])
        oy = aug_gen.uniform([bsz], 0, 9, dtype=tf.int32)
        ox = aug_gen.uniform([bsz], 0, 9, dtype=tf.int32)
        flip = aug_gen.uniform([bsz]) < 0.5
        rows = oy[:, None] + ar
        cols = ox[:, None] + tf.where(flip[:, None], 31 - ar, ar)
        return tf.gather(tf.gather(xp, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)

    def prepare(xb, train):
        if train and args.augment:
            xb = augment(xb)
        return (tf.cast(xb, tf.float32) / 255.0 - mean) / std

    r = pc.run_training_keras(model=model, opt=opt, args=args, x_train=xtr, y_train=ytr,
                              x_test=xte, y_test=yte, prepare=prepare)
    util_rec = util.stop() if util else None
    rec = pc.build_record(
        args=args, dev=dev, workload=WORKLOAD, load_s=load_s, r=r,
        flops_per_train_image=2 * 3 * MACS_FORWARD, util=util_rec,
        framework=pc.keras_fields(args),
        extra={"parameters": nparams, "data": source, "augment": args.augment,
               "peer_options": {"model": "hand-built ResNet-50 v1.5 (torchvision layout)",
                                "layout": "NHWC", "jit_compile": args.jit_compile,
                                "train_metrics": not args.no_train_metrics,
                                "data_feed": "uint8 set in one tf tensor, per-epoch tf.gather "
                                             "shuffle, normalise in the tf.function step"}})
    pc.finish_record(rec, args, {
        "macs_forward_per_image": MACS_FORWARD, "macs_forward_conv": macs_conv,
        "per_train_image_contract": 2 * (3 * MACS_FORWARD - MACS_CONV1),
        "counting": "as the torch peer: per_train_image = 2 FLOPs x 3 x forward MACs"})


if __name__ == "__main__":
    main()
