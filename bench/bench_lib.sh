#!/usr/bin/env bash
# Helpers shared by bench/cpu_*.sh (sourced, not run). See bench/README.md.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"

# Python that has torch: Debian's /usr/bin/python3 (PyTorch 1.13) if it imports torch, else
# python3 on PATH. TORCH=pypi: the current PyTorch from PyPI, in results/venv-torch, made on
# first use (about 5 GB with its CUDA libraries; the CPU peer runs on the CPU either way).
# Override with PYTHON=...
pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    if [ "${TORCH:-}" = pypi ]; then
        local venv="$REPO_ROOT/results/venv-torch"
        if ! "$venv/bin/python" -c 'import torch' >/dev/null 2>&1; then
            echo "creating $venv with PyTorch from PyPI (once)" >&2
            python3 -m venv "$venv" >&2 && "$venv/bin/python" -m pip install -q torch numpy >&2
        fi
        echo "$venv/bin/python"
        return
    fi
    if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
        echo /usr/bin/python3
    else
        echo python3
    fi
}

# Python of the Keras peers: results/venv-keras (python3 -m venv), created on first use with
# TensorFlow from PyPI (tensorflow-cpu, else tensorflow) and pillow (JPEG CIFAR-10); prints the versions to stderr and the
# interpreter path to stdout. Override with KERAS_PYTHON=...; KERAS_VENV, KERAS_PIP_SPEC (e.g.
# "tensorflow-cpu==2.20.0") choose where and what.
keras_python() {
    if [ -n "${KERAS_PYTHON:-}" ]; then echo "$KERAS_PYTHON"; return; fi
    local venv="${KERAS_VENV:-$REPO_ROOT/results/venv-keras}" spec
    if ! "$venv/bin/python" -c 'import tensorflow, PIL' >/dev/null 2>&1; then
        echo "creating $venv with TensorFlow from PyPI (once)" >&2
        python3 -m venv "$venv" >&2 || return 1
        "$venv/bin/python" -m pip install -q --upgrade pip >&2
        for spec in ${KERAS_PIP_SPEC:-tensorflow-cpu tensorflow}; do
            "$venv/bin/python" -m pip install -q "$spec" pillow >&2 && break
        done
        "$venv/bin/python" -c 'import tensorflow' >/dev/null 2>&1 || { echo "keras_python: TensorFlow did not install into $venv" >&2; return 1; }
    fi
    TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" -c 'import sys, numpy, tensorflow as tf, keras; print(f"keras venv: {sys.executable}, python {sys.version.split()[0]}, tensorflow {tf.__version__}, keras {keras.__version__}, numpy {numpy.__version__}")' 2>&1 | tail -1 >&2
    echo "$venv/bin/python"
}

# Directory whose libblas.so.3 is OpenBLAS (Debian: openblas-pthread, -openmp or -serial),
# empty if none. Putting it first on LD_LIBRARY_PATH for the torch run makes PyTorch's sgemm_
# come from OpenBLAS whatever update-alternatives says (Debian's reference BLAS is 5-6x slower).
find_openblas_dir() {
    local multiarch d
    multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
    for d in "/usr/lib/$multiarch/openblas-pthread" "/usr/lib/$multiarch/openblas-openmp" \
             "/usr/lib/$multiarch/openblas-serial" /usr/lib64/openblas-pthread /usr/lib/openblas-base; do
        if [ -e "$d/libblas.so.3" ]; then echo "$d"; return; fi
    done
}

# Prints the BLAS situation; sets TORCH_ENV (array of VAR=value for `env`).
setup_torch_blas() {
    local py="$1" dir alt
    TORCH_ENV=(OPENBLAS_NUM_THREADS="${TORCH_BLAS_THREADS:-1}" MKL_NUM_THREADS="${TORCH_BLAS_THREADS:-1}")
    alt="$(update-alternatives --query libblas.so.3-"$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)" 2>/dev/null | sed -n 's/^Value: //p')"
    echo "system libblas.so.3 alternative: ${alt:-unknown}"
    if [ "${TORCH_BLAS:-openblas}" = system ]; then
        echo "TORCH_BLAS=system: leaving the BLAS as the system resolves it"
    else
        dir="$(find_openblas_dir)"
        # The peer's fastest setting needs OpenBLAS; a bench script may install what peers need.
        if [ -z "$dir" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing libopenblas0-pthread for the PyTorch peer (apt-get)"
            apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1 || true
            dir="$(find_openblas_dir)"
        fi
        if [ -n "$dir" ]; then
            TORCH_ENV+=(LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
            echo "torch run: LD_LIBRARY_PATH=$dir (OpenBLAS first), OPENBLAS_NUM_THREADS=${TORCH_BLAS_THREADS:-1}"
        else
            echo "WARNING: no OpenBLAS libblas.so.3 found; PyTorch may use Debian's reference BLAS" >&2
            echo "         (5-6x slower on fashion-mlp): apt-get install -y libopenblas0-pthread" >&2
        fi
    fi
    echo -n "BLAS that PyTorch actually calls (sgemm_ provider): "
    env "${TORCH_ENV[@]}" "$py" -c "
import sys; sys.path.insert(0, '$BENCH_DIR/peers')
import torch, peer_common as pc; pc.torch = torch
b = pc.blas_info(); print(b['kind'], '-', b['sgemm_provider'])" 2>&1 | tail -1
}

# has_opt OPTION ARGS... : true when ARGS hold OPTION (as "--x v" or "--x=v")
has_opt() {
    local o="$1" a; shift
    for a in "$@"; do
        case "$a" in "$o"|"$o"=*) return 0 ;; esac
    done
    return 1
}

# default_opt OPTION VALUE ARGS... : appends OPTION VALUE to DEFAULTS unless ARGS give OPTION
# (trainbench's command line refuses an option given twice)
default_opt() {
    local o="$1" v="$2"; shift 2
    has_opt "$o" "$@" || DEFAULTS+=("$o" "$v")
}

# jget FILE KEY.PATH -> value or "n/a"
jget() {
    local f="$1" k="$2"
    [ -s "$f" ] || { echo "n/a"; return; }
    if command -v jq >/dev/null 2>&1; then
        jq -r ".$k // \"n/a\"" "$f" 2>/dev/null || echo "n/a"
    else
        python3 - "$f" "$k" <<'EOF' 2>/dev/null || echo "n/a"
import json, sys
d = json.load(open(sys.argv[1]))
for p in sys.argv[2].split("."):
    d = d.get(p) if isinstance(d, dict) else None
print("n/a" if d is None else d)
EOF
    fi
}

# fmt NUMBER DECIMALS (n/a passes through)
fmt() {
    case "$1" in n/a|null|"") echo "n/a" ;; *) LC_ALL=C printf "%.${2}f" "$1" ;; esac
}

# ratio A B DECIMALS -> A/B
ratio() {
    case "$1$2" in *n/a*|*null*) echo "n/a"; return ;; esac
    awk -v a="$1" -v b="$2" -v d="$3" 'BEGIN { if (b == 0) print "n/a"; else printf "%." d "f", a / b }'
}

machine_banner() {
    local cpu cores
    cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)"
    cores="$(nproc 2>/dev/null || echo '?')"
    echo "date:     $(date -Iseconds)"
    echo "machine:  $(hostname), CPU ${cpu:-unknown}, $cores usable cores ($(grep -c ^processor /proc/cpuinfo) logical), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel:   $(uname -sr)"
    echo "git:      $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
}

# cpu_busy SECONDS -> % of all CPUs busy over that interval (from /proc/stat)
cpu_busy() {
    local a b c d e f g h t1 i1 t2 i2
    read -r _ a b c d e f g h _ < /proc/stat; t1=$((a+b+c+d+e+f+g+h)); i1=$((d+e))
    sleep "$1"
    read -r _ a b c d e f g h _ < /proc/stat; t2=$((a+b+c+d+e+f+g+h)); i2=$((d+e))
    echo $(( t2 > t1 ? 100 - 100 * (i2 - i1) / (t2 - t1) : 0 ))
}

# Warn when other processes keep the CPU busy: the comparison needs an idle machine
# (PyTorch's OpenMP threads slow down 10x or more when they share the cores).
check_idle() {
    local busy
    busy="$(cpu_busy 2)"
    if [ "$busy" -gt 20 ]; then
        echo "WARNING: CPU ${busy}% busy (load average $(cut -d' ' -f1 /proc/loadavg), $(nproc) cores) before '$1': other processes are running, timings will be noisy" >&2
        ps -eo pid,pcpu,comm --sort=-pcpu | sed -n 2,4p | sed 's/^/         /' >&2
    fi
}

# run_logged LOGFILE CMD... : runs, tees output, returns the command's status
run_logged() {
    local log="$1"; shift
    echo "+ $*"
    set -o pipefail
    "$@" 2>&1 | tee "$log"
    local rc=$?
    set +o pipefail
    return $rc
}

# print_table PT_JSON TB_JSON [KERAS_JSON]  (the keras row and ratios only with KERAS_JSON)
print_table() {
    local pt="$1" tb="$2" kr="${3:-}" side f
    printf "%-11s %12s %10s %10s %12s %12s %9s\n" "" "train+test s" "train s" "test s" "images/s" "img/s steady" "test acc"
    for side in pytorch ${kr:+keras} trainbench; do
        case $side in pytorch) f="$pt" ;; keras) f="$kr" ;; *) f="$tb" ;; esac
        printf "%-11s %12s %10s %10s %12s %12s %9s\n" "$side" \
            "$(fmt "$(jget "$f" times_s.train_test)" 2)" "$(fmt "$(jget "$f" times_s.train)" 2)" \
            "$(fmt "$(jget "$f" times_s.test)" 2)" \
            "$(fmt "$(jget "$f" throughput.train_images_per_s)" 1)" \
            "$(fmt "$(jget "$f" throughput.train_images_per_s_steady)" 1)" \
            "$(fmt "$(jget "$f" accuracy.test)" 4)"
    done
    echo
    echo "ratio trainbench/pytorch, train+test time:  $(ratio "$(jget "$tb" times_s.train_test)" "$(jget "$pt" times_s.train_test)" 3)   (< 1: trainbench faster)"
    echo "ratio trainbench/pytorch, images/s:         $(ratio "$(jget "$tb" throughput.train_images_per_s)" "$(jget "$pt" throughput.train_images_per_s)" 3)   (> 1: trainbench faster)"
    echo "ratio trainbench/pytorch, images/s steady:  $(ratio "$(jget "$tb" throughput.train_images_per_s_steady)" "$(jget "$pt" throughput.train_images_per_s_steady)" 3)   (> 1: trainbench faster)"
    [ -n "$kr" ] || return 0
    echo "ratio trainbench/keras, train+test time:    $(ratio "$(jget "$tb" times_s.train_test)" "$(jget "$kr" times_s.train_test)" 3)   (< 1: trainbench faster)"
    echo "ratio trainbench/keras, images/s steady:    $(ratio "$(jget "$tb" throughput.train_images_per_s_steady)" "$(jget "$kr" throughput.train_images_per_s_steady)" 3)   (> 1: trainbench faster)"
}

# has_peer NAME : true when PEERS (default "torch") names NAME
has_peer() {
    case " ${PEERS:-torch} " in *" $1 "*) return 0 ;; esac
    return 1
}

# compare_cpu ARGS... : runs the PyTorch peer ($PEER), with PEERS="torch keras" also the Keras
# peer ($KERAS_PEER, python from keras_python), then trainbench ($TRAINBENCH run $WORKLOAD),
# each with ${DEFAULTS[@]} then ARGS, and prints the table. Needs WORKLOAD PEER TRAINBENCH
# OUTDIR PY DEFAULTS TORCH_ENV THREADS; PEER_ONLY_ARGS (array) go to the PyTorch peer only,
# KERAS_ONLY_ARGS (array) and $KERAS_ARGS to the Keras peer only.
compare_cpu() {
    local pt_json="$OUTDIR/pytorch.json" tb_json="$OUTDIR/trainbench.json" rc_pt=0 rc_tb=0
    local kr_json="" rc_kr=0 kpy
    local -a cmd_pt cmd_tb cmd_kr=()
    # shellcheck disable=SC2206
    cmd_pt=(env "${TORCH_ENV[@]}" "$PY" "$PEER" "${DEFAULTS[@]}"
            ${PEER_ONLY_ARGS[@]+"${PEER_ONLY_ARGS[@]}"} ${PEER_ARGS:-} "$@" --out "$pt_json")
    # shellcheck disable=SC2206
    cmd_tb=("$TRAINBENCH" run "$WORKLOAD" "${DEFAULTS[@]}" ${TB_ARGS:-} "$@" --out "$tb_json")
    rm -f "$pt_json" "$tb_json" "$OUTDIR/keras.json"

    if has_peer torch && [ "${ONLY:-pytorch}" = pytorch ]; then
        check_idle pytorch
        echo "-- PyTorch peer"
        run_logged "$OUTDIR/pytorch.log" "${cmd_pt[@]}" || { rc_pt=$?; echo "PyTorch peer failed (exit $rc_pt)" >&2; }
        echo
    fi
    if has_peer keras && [ "${ONLY:-keras}" = keras ]; then
        kr_json="$OUTDIR/keras.json"
        if kpy="$(keras_python)"; then
            # shellcheck disable=SC2206
            cmd_kr=(env TF_CPP_MIN_LOG_LEVEL=2 "$kpy" "$KERAS_PEER" "${DEFAULTS[@]}"
                    ${KERAS_ONLY_ARGS[@]+"${KERAS_ONLY_ARGS[@]}"} ${KERAS_ARGS:-} "$@" --out "$kr_json")
            check_idle keras
            echo "-- Keras peer"
            run_logged "$OUTDIR/keras.log" "${cmd_kr[@]}" || { rc_kr=$?; echo "Keras peer failed (exit $rc_kr)" >&2; }
        else
            rc_kr=1
        fi
        echo
    fi
    if [ "${ONLY:-trainbench}" = trainbench ]; then
        if [ -x "$TRAINBENCH" ]; then
            check_idle trainbench
            echo "-- trainbench"
            run_logged "$OUTDIR/trainbench.log" "${cmd_tb[@]}" || { rc_tb=$?; echo "trainbench failed (exit $rc_tb)" >&2; }
        else
            echo "-- trainbench: $TRAINBENCH not found or not executable (build it, or set TRAINBENCH=...)"
            rc_tb=127
        fi
        echo
    fi

    echo "== $WORKLOAD, CPU, $(date -Iseconds) =="
    echo "machine: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores, load average now $(cut -d' ' -f1-3 /proc/loadavg)"
    has_peer torch && echo "PyTorch $(jget "$pt_json" torch_version), BLAS $(jget "$pt_json" blas.kind), OPENBLAS_NUM_THREADS ${TORCH_BLAS_THREADS:-1}, threads $THREADS"
    [ -z "$kr_json" ] || echo "TensorFlow $(jget "$kr_json" tensorflow_version), Keras $(jget "$kr_json" keras_version), threads $THREADS"
    print_table "$pt_json" "$tb_json" "$kr_json" | tee "$OUTDIR/table.txt"
    echo
    echo "commands:"
    echo "  ${cmd_pt[*]}"
    [ ${#cmd_kr[@]} -eq 0 ] || echo "  ${cmd_kr[*]}"
    echo "  ${cmd_tb[*]}"
    { echo; echo "commands:"; echo "  ${cmd_pt[*]}"; [ ${#cmd_kr[@]} -eq 0 ] || echo "  ${cmd_kr[*]}"
      echo "  ${cmd_tb[*]}"; } >> "$OUTDIR/table.txt"
    [ $rc_pt -eq 0 ] && [ $rc_kr -eq 0 ] && { [ $rc_tb -eq 0 ] || [ $rc_tb -eq 127 ]; }
}
