"""The device scripts' last table: every result record in a folder (trainbench's and the PyTorch
peers'), one row each, then trainbench's best steady ResNet throughput against PyTorch's best,
then issue 23's time targets and flips, met or not.

    python3 bench/device/summarize.py RECORD_DIR [OUT.json]

OUT.json, where given, gets every JSON file of the folder (records and profiles) by file name, so
that one file brings them all back.
"""
import glob
import json
import os
import sys


def get(r, *path):
    for k in path:
        if not isinstance(r, dict) or k not in r:
            return None
        r = r[k]
    return r


def fmt(v, spec, width):
    """v formatted by spec (a trailing % is printed, not applied), right-aligned in width; "-"
    where it is missing."""
    if v is None:
        text = "-"
    elif spec.endswith("%"):
        text = format(v, spec[:-1]) + "%"
    else:
        text = format(v, spec)
    return text.rjust(width)


def best_of(rows, higher):
    """The best (value, name) of (name, value) rows with a value: the largest or the smallest."""
    rows = [(v, k) for k, v in rows if v]
    return (max if higher else min)(rows) if rows else None


def main():
    folder = sys.argv[1]
    files = {}
    for p in sorted(glob.glob(os.path.join(folder, "*.json"))):
        try:
            with open(p) as f:
                files[os.path.basename(p)[:-5]] = json.load(f)
        except (OSError, ValueError) as e:
            print(f"{p}: unreadable ({e})")
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            json.dump(files, f, indent=1)
    runs = {k: r for k, r in files.items() if get(r, "workload") and get(r, "times_s")}
    print(f"\n{'run':<30} {'precision':>9} {'train s':>8} {'tr+te s':>8} {'img/s steady':>13} "
          f"{'test acc':>8} {'MFU':>7} {'MFU meas':>8} {'host ms':>8}")
    for k, r in runs.items():
        mfu, mfu_m = get(r, "flops", "mfu"), get(r, "flops", "mfu_measured")
        cells = [fmt(get(r, "precision"), "", 9), fmt(get(r, "times_s", "train"), ".2f", 8),
                 fmt(get(r, "times_s", "train_test"), ".2f", 8),
                 fmt(get(r, "throughput", "train_images_per_s_steady"), ".0f", 13),
                 fmt(get(r, "accuracy", "test"), ".4f", 8),
                 fmt(None if mfu is None else 100 * mfu, ".2f%", 7),
                 fmt(None if mfu_m is None else 100 * mfu_m, ".2f%", 8),
                 fmt(get(r, "step_split_ms", "host_issue"), ".3f", 8)]
        print(f"{k:<30} " + " ".join(cells))
    for k, r in runs.items():
        if get(r, "step_graphs"):
            print(f"{k}: step graphs {get(r, 'step_graphs')}")

    evals = {k: r for k, r in files.items() if get(r, "kind") == "evaluation"}
    if evals:
        print(f"\n{'evaluation':<30} {'of':>20} {'on':>12} {'precision':>9} {'split':>5} "
              f"{'accuracy':>8} {'loss':>8}")
    for k, r in evals.items():
        of = f"{get(r, 'checkpoint', 'written_by')} {get(r, 'checkpoint', 'hyper', 'precision')}"
        cells = [fmt(of, "", 20), fmt(get(r, "device", "backend"), "", 12),
                 fmt(get(r, "precision"), "", 9), fmt(get(r, "split"), "", 5),
                 fmt(get(r, "accuracy"), ".4f", 8), fmt(get(r, "loss"), ".4f", 8)]
        print(f"{k:<30} " + " ".join(cells))

    # Test accuracy over seeds: runs of every epoch (no --steps) grouped by who ran them,
    # workload and precision. At WORKLOADS.md's ResNet settings one seed's runs differ by up to
    # 20 points (BENCHMARKS.md, tenth session), so issue 5's "within 1 point of PyTorch's" is read
    # from the means.
    groups = {}
    for k, r in runs.items():
        if get(r, "stopped_by_steps") or get(r, "accuracy", "test") is None:
            continue
        if get(r, "epochs_completed") is not None and get(r, "epochs_completed") != get(r, "epochs"):
            continue
        who = "pytorch" if get(r, "peer") == "pytorch" else "trainbench"
        key = (get(r, "workload"), get(r, "precision"), get(r, "epochs"), who)
        groups.setdefault(key, []).append((get(r, "seed"), get(r, "accuracy", "test")))
    mean = {key: sum(a for _, a in v) / len(v) for key, v in groups.items()}
    if any(len(v) > 1 for v in groups.values()):
        print(f"\n{'test accuracy over seeds':<44} {'runs':>4} {'mean':>7} {'min':>7} {'max':>7}  seeds")
        for key, v in sorted(groups.items(), key=str):
            workload, precision, epochs, who = key
            acc = [a for _, a in v]
            name = f"{who} {workload} {precision} {epochs} ep"
            print(f"{name:<44} {len(acc):>4} {mean[key]:>7.4f} {min(acc):>7.4f} "
                  f"{max(acc):>7.4f}  {' '.join(str(sd) for sd, _ in v)}")
        for key, v in sorted(groups.items(), key=str):
            workload, precision, epochs, who = key
            peer = (workload, precision, epochs, "pytorch")
            if who != "trainbench" or peer not in groups:
                continue
            d = mean[key] - mean[peer]
            print(f"{workload} {precision}: trainbench mean - PyTorch mean = {100 * d:+.2f} points "
                  f"({len(v)} and {len(groups[peer])} runs; issue 5: within 1)")

    def best(pytorch):
        return best_of([(k, get(r, "throughput", "train_images_per_s_steady"))
                        for k, r in runs.items() if get(r, "workload") == "resnet50-cifar10"
                        and (get(r, "peer") == "pytorch") == pytorch], higher=True)
    tb, torch = best(False), best(True)
    if tb and torch:
        print(f"\nResNet-50 steady throughput, best trainbench {tb[1]} {tb[0]:.0f} / best PyTorch "
              f"{torch[1]} {torch[0]:.0f} images/s = {tb[0] / torch[0]:.2f}x (issue 6: 1.5x)")
    verdicts(runs)


def verdicts(runs):
    """Issue 23's time targets (H100) and its two flips (--nhwc, --fused-mlp: the default where
    faster, removed where slower), read off trainbench's whole CUDA runs."""
    cuda = {k: r for k, r in runs.items()
            if get(r, "peer") != "pytorch" and get(r, "device", "kind") == "cuda"}
    whole = {k: r for k, r in cuda.items()
             if not get(r, "stopped_by_steps") and get(r, "epochs_completed") == 10}
    lines = []
    for k, r in whole.items():
        t = get(r, "times_s", "train_test")
        if get(r, "workload") == "fashion-mlp":
            target = 1.0
        elif get(r, "workload") == "resnet50-cifar10" and get(r, "precision") == "bf16":
            target = 30.0
        else:
            continue
        lines.append(f"{k}: {get(r, 'workload')} 10 epochs train+test {t:.2f} s, target < "
                     f"{target:.0f} s: {'met' if t < target else 'NOT met'}")

    def flip(name, on, off, unit, higher):
        if not (on and off):
            lines.append(f"{name}: no pair of runs to compare")
            return
        better = on[0] > off[0] if higher else on[0] < off[0]
        num = lambda v: f"{v:.0f}" if v >= 100 else f"{v:.3g}"  # noqa: E731
        lines.append(f"{name}: {on[1]} {num(on[0])} against {off[1]} {num(off[0])} {unit}: "
                     f"{'faster: make it the default' if better else 'slower: remove it'}")

    graphs = {k: r for k, r in cuda.items() if str(get(r, "step_graphs") or "").startswith("on")}
    bf16_resnet = [(k, r) for k, r in graphs.items()
                   if get(r, "workload") == "resnet50-cifar10" and get(r, "precision") == "bf16"]
    by_layout = {layout: best_of([(k, get(r, "throughput", "train_images_per_s_steady"))
                                  for k, r in bf16_resnet if get(r, "conv_layout") == layout], True)
                 for layout in ("nhwc", "nchw")}
    flip("--nhwc (bf16 ResNet-50)", by_layout["nhwc"], by_layout["nchw"], "steady images/s", True)
    mlp = [(k, r) for k, r in graphs.items() if get(r, "workload") == "fashion-mlp" and k in whole]
    by_step = {fused: best_of([(k, get(r, "times_s", "train")) for k, r in mlp
                               if bool(get(r, "fused_mlp_step")) == fused], False)
               for fused in (True, False)}
    flip("--fused-mlp (fashion-mlp 10 epochs)", by_step[True], by_step[False], "s training", False)
    print("\nissue 23: targets and flips")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
