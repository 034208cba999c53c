"""The device scripts' last table: every record in a folder (trainbench's and the PyTorch peers'),
one row each, then trainbench's best steady ResNet throughput against PyTorch's best.

    python3 bench/device/summarize.py RECORD_DIR OUT.json

OUT.json gets every record (and profile) by file name, so one file brings them all back.
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


def fmt(v, spec):
    """v formatted by spec; a trailing % in spec is printed, not applied."""
    if v is None:
        return "-"
    return format(v, spec[:-1]) + "%" if spec.endswith("%") else format(v, spec)


def main():
    folder, out = sys.argv[1], sys.argv[2]
    records = {}
    for p in sorted(glob.glob(os.path.join(folder, "*.json"))):
        try:
            with open(p) as f:
                records[os.path.basename(p)[:-5]] = json.load(f)
        except (OSError, ValueError) as e:
            print(f"{p}: unreadable ({e})")
    with open(out, "w") as f:
        json.dump(records, f, indent=1)
    runs = {k: r for k, r in records.items() if not k.startswith("profile")}
    print(f"\n{'run':<30} {'train s':>8} {'test s':>7} {'tr+te s':>8} {'img/s steady':>13} "
          f"{'test acc':>8} {'MFU':>7} {'MFU meas':>8}")
    for k, r in runs.items():
        mfu, mfu_m = get(r, "flops", "mfu"), get(r, "flops", "mfu_measured")
        print(f"{k:<30} {fmt(get(r, 'times_s', 'train'), '8.2f')} "
              f"{fmt(get(r, 'times_s', 'test'), '7.2f')} "
              f"{fmt(get(r, 'times_s', 'train_test'), '8.2f')} "
              f"{fmt(get(r, 'throughput', 'train_images_per_s_steady'), '13.0f')} "
              f"{fmt(get(r, 'accuracy', 'test'), '8.4f')} "
              f"{fmt(None if mfu is None else 100 * mfu, '6.2f%'):>7} "
              f"{fmt(None if mfu_m is None else 100 * mfu_m, '7.2f%'):>8}")
    for k, r in runs.items():
        if get(r, "step_graphs"):
            print(f"{k}: step graphs {get(r, 'step_graphs')}")
    def best(prefix):
        rows = [(get(r, "throughput", "train_images_per_s_steady"), k) for k, r in runs.items()
                if k.startswith(prefix) and "resnet" in k]
        rows = [row for row in rows if row[0]]
        return max(rows) if rows else None
    tb, torch = best("tb_"), best("torch_")
    if tb and torch:
        print(f"\nResNet-50 steady throughput, best trainbench {tb[1]} {tb[0]:.0f} / best PyTorch "
              f"{torch[1]} {torch[0]:.0f} images/s = {tb[0] / torch[0]:.2f}x (issue 6: 1.5x)")


if __name__ == "__main__":
    main()
