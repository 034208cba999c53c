"""Keras peer of trainbench's `fashion-mlp` workload (see /work/shared/WORKLOADS.md).

The Keras beginner tutorial's model, to the contract, as bench/peers/fashion_mlp_torch.py:
Fashion-MNIST from the same gzip'd IDX files (read by peer_common, no tf.keras.datasets
download), pixels / 255 as float32, Flatten 784 -> Dense 128 ReLU -> Dense 10 (logits; Keras'
default init is the contract's: Glorot-uniform kernels, zero biases), softmax cross-entropy
(mean), Adam lr 1e-3, beta_1 0.9, beta_2 0.999, epsilon 1e-7, batch 32 (last partial batch
kept), 10 epochs, new shuffle every epoch (seeded numpy permutation), then one test pass.

The whole set is one tf tensor; each step is a tf.function (GradientTape + Adam) on a slice of a
per-epoch shuffled copy: TensorFlow's fastest ordinary way to train this model (model.fit adds
a tf.data pipeline and callbacks per step). Throughput and record as the torch peer's.

    results/venv-keras/bin/python bench/peers/fashion_mlp_keras.py [--threads 2] [--steps 200] \
        [--jit-compile] [--out r.json]

Differences from the torch peer that are TensorFlow's own: Keras' Adam puts epsilon on sqrt(v)
before the step-size bias correction (PyTorch: on sqrt(v_hat)); TensorFlow flushes denormals on
CPU; the shuffle order differs (numpy's generator, not torch.randperm). CPU only.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402

WORKLOAD = "fashion-mlp"
MACS_FORWARD = 784 * 128 + 128 * 10          # 101,632 forward multiply-adds per image
MACS_FIRST_LAYER = 784 * 128                 # its input gradient is not computed


def main():
    p = pc.base_parser(__doc__.split("\n")[0], WORKLOAD, batch=32, epochs=10, framework="keras")
    args = p.parse_args()
    if args.data is None:
        args.data = pc.FASHION_DEFAULT
    pc.check_common_args(args)
    dev = pc.import_tf(args)
    tf, keras = pc.tf, pc.keras
    import numpy as np
    util = None if args.no_util else pc.UtilSampler(dev).start()

    t0 = time.perf_counter()
    xtr, ytr, xte, yte = (np.frombuffer(buf, np.uint8).reshape(dims)
                          for buf, dims in pc.load_fashion_raw(args.data))
    xtr = tf.constant(xtr.astype(np.float32) / np.float32(255.0))
    xte = tf.constant(xte.astype(np.float32) / np.float32(255.0))
    ytr = tf.constant(ytr.astype(np.int64))
    yte = tf.constant(yte.astype(np.int64))
    load_s = time.perf_counter() - t0
    if not args.quiet:
        print(f"loaded {xtr.shape[0]} train / {xte.shape[0]} test images from {args.data} "
              f"in {load_s:.3f} s; tensorflow {tf.__version__}, keras {keras.__version__}, "
              f"{args.threads or 'default'} threads", flush=True)

    layers = keras.layers
    model = keras.Sequential([keras.Input((28, 28)), layers.Flatten(),
                              layers.Dense(128, activation="relu"), layers.Dense(10)])
    nparams = model.count_params()
    assert nparams == 101770, nparams
    opt = pc.make_keras_adam(args)

    r = pc.run_training_keras(model=model, opt=opt, args=args, x_train=xtr, y_train=ytr,
                              x_test=xte, y_test=yte, prepare=lambda xb, train: xb)
    util_rec = util.stop() if util else None
    rec = pc.build_record(
        args=args, dev=dev, workload=WORKLOAD, load_s=load_s, r=r,
        flops_per_train_image=2 * 3 * MACS_FORWARD, util=util_rec,
        framework=pc.keras_fields(args),
        extra={"parameters": nparams, "data": os.path.abspath(args.data),
               "peer_options": {"jit_compile": args.jit_compile,
                                "train_metrics": not args.no_train_metrics,
                                "data_feed": "whole set in one tf tensor, per-epoch tf.gather "
                                             "shuffle, contiguous batch slices, tf.function "
                                             "train step"}})
    pc.finish_record(rec, args, {
        "macs_forward_per_image": MACS_FORWARD,
        "per_train_image_contract": 2 * (3 * MACS_FORWARD - MACS_FIRST_LAYER),
        "counting": "as the torch peer: per_train_image = 2 FLOPs x 3 x forward MACs"})


if __name__ == "__main__":
    main()
