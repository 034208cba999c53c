#!/usr/bin/env bash
# Runs HERE (the Debian build machine), never on the GPU machine. Fills <repo>/.carry with what
# bench/device/check.sh needs on the lent GPU machine and its image lacks (it has nvcc, CMake,
# ninja, PyTorch and cuDNN/cuBLAS, but no oneDNN, fmt, CLI11, nlohmann-json, GoogleTest,
# libjpeg/libpng dev files, and no data sets), and nothing can be fetched there:
#
#   .carry/root.tar.xz            a prefix tree (include/, lib/x86_64-linux-gnu/, share/cmake/) of
#                                 the Debian packages below, headers + libraries + CMake configs;
#                                 xz because libdnnl.so alone is 40 MB (7 MB packed)
#   .carry/data/fashion-mnist/    the four IDX .gz files (Debian's dataset-fashion-mnist)
#   .carry/data/cifar10-jpeg.tar.gz
#
# .carry/ is git-ignored: name it in the device call's `carry`. The working tree plus carried
# paths must stay under 64 MiB; this script prints the total and fails when it is over.
#
# Usage: bench/device/prepare_carry.sh [--no-data] [--repack]
#   --repack  rebuild root.tar.xz even when it exists (the packages rarely change)
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CARRY="$REPO/.carry"
WITH_DATA=1
REPACK=0
for a in "$@"; do
  case "$a" in
    --no-data) WITH_DATA=0 ;;
    --repack) REPACK=1 ;;
    *) echo "usage: $0 [--no-data] [--repack]" >&2; exit 2 ;;
  esac
done
LIMIT_BYTES=$((64 * 1024 * 1024))

PKGS="libdnnl-dev libdnnl2 libfmt-dev libfmt9 libcli11-dev nlohmann-json3-dev libgtest-dev
      libgmock-dev libjpeg62-turbo-dev libjpeg62-turbo libpng-dev libpng16-16 zlib1g-dev zlib1g
      opencl-c-headers opencl-clhpp-headers ocl-icd-opencl-dev ocl-icd-libopencl1"

mkdir -p "$CARRY"
if [ "$REPACK" = 1 ] || [ ! -s "$CARRY/root.tar.xz" ]; then
  STAGE=$(mktemp -d /tmp/tb-carry.XXXXXX)
  trap 'rm -rf "$STAGE"' EXIT
  ROOT="$STAGE/root"
  mkdir -p "$ROOT" "$CARRY"

  missing=""
  for p in $PKGS; do
    if ! files=$(dpkg -L "$p" 2>/dev/null); then
      missing="$missing $p"
      continue
    fi
    while IFS= read -r f; do
      case "$f" in
        /usr/include/* | /usr/lib/x86_64-linux-gnu/* | /lib/x86_64-linux-gnu/* | /usr/share/cmake/* | /usr/lib/cmake/*) ;;
        *) continue ;;
      esac
      [ -d "$f" ] && [ ! -L "$f" ] && continue
      case "$f" in
        */pkgconfig/*) continue ;;
        # static libraries nobody links here (the .so is used); GoogleTest is static only
        */libjpeg.a | */libpng*.a | */libz.a) continue ;;
      esac
      rel=${f#/usr/}
      rel=${rel#/}
      mkdir -p "$ROOT/$(dirname "$rel")"
      cp -a "$f" "$ROOT/$rel"
    done <<<"$files"
  done
  [ -n "$missing" ] && echo "prepare_carry: warning: not installed here:$missing" >&2

  # Absolute symlinks (libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) would point outside the tree.
  find "$ROOT" -type l | while IFS= read -r l; do
    t=$(readlink "$l")
    case "$t" in
      /*)
        b=$(basename "$t")
        if [ -e "$(dirname "$l")/$b" ]; then ln -sfn "$b" "$l"; else echo "prepare_carry: dangling $l -> $t" >&2; fi
        ;;
    esac
  done
  # Multiarch headers (jconfig.h) live in include/x86_64-linux-gnu, which the compiler only searches
  # under /usr; put copies beside the others.
  if [ -d "$ROOT/include/x86_64-linux-gnu" ]; then
    cp -an "$ROOT/include/x86_64-linux-gnu/." "$ROOT/include/"
  fi

  echo "prepare_carry: staged $(du -sh "$ROOT" | cut -f1) unpacked; packing (xz, takes a minute or two)"
  rm -f "$CARRY/root.tar.xz"
  if ! tar -C "$ROOT" -cf - . | xz -T2 -9 >"$CARRY/root.tar.xz.tmp"; then
    echo "prepare_carry: packing failed" >&2
    rm -f "$CARRY/root.tar.xz.tmp"
    exit 1
  fi
  mv "$CARRY/root.tar.xz.tmp" "$CARRY/root.tar.xz"
else
  echo "prepare_carry: keeping $CARRY/root.tar.xz (--repack rebuilds it)"
fi

if [ "$WITH_DATA" = 1 ]; then
  # A copy already in .carry (top level, as others put it) is used as is, not duplicated.
  FM=/usr/share/datasets/fashion-mnist
  if [ -f "$CARRY/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
    echo "prepare_carry: using the existing $CARRY/fashion-mnist"
  else
    mkdir -p "$CARRY/data/fashion-mnist"
    for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
      if [ -f "$FM/$f" ]; then cp -u "$FM/$f" "$CARRY/data/fashion-mnist/$f"; else echo "prepare_carry: warning: $FM/$f missing (apt-get install dataset-fashion-mnist)" >&2; fi
    done
  fi
  if [ -f "$CARRY/cifar10-jpeg.tar.gz" ]; then
    echo "prepare_carry: using the existing $CARRY/cifar10-jpeg.tar.gz"
  else
    CIFAR=""
    for c in "$REPO/data/cifar10-jpeg.tar.gz" /work/shared/data/cifar10-jpeg.tar.gz; do
      [ -f "$c" ] && CIFAR=$c && break
    done
    mkdir -p "$CARRY/data"
    if [ -n "$CIFAR" ]; then cp -u "$CIFAR" "$CARRY/data/cifar10-jpeg.tar.gz"; else echo "prepare_carry: warning: cifar10-jpeg.tar.gz not found" >&2; fi
  fi
fi

# What travels: tracked + untracked-not-ignored files, plus what `carry` names. Ours: root.tar.xz
# and the data; anything else in .carry belongs to someone else and travels only if named.
tree_bytes=$(cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
ours=""
for p in root.tar.xz data fashion-mnist cifar10-jpeg.tar.gz; do [ -e "$CARRY/$p" ] && ours="$ours $p"; done
ours_bytes=$(cd "$CARRY" && du -scb $ours | tail -1 | cut -f1)
all_bytes=$(du -sb "$CARRY" | cut -f1)
echo "prepare_carry: contents of $CARRY:"
(cd "$CARRY" && find . -type f -printf '  %10s  %p\n' | sort -k2)
awk -v t="$tree_bytes" -v c="$ours_bytes" -v a="$all_bytes" 'BEGIN { printf "prepare_carry: working tree %.1f MiB + what check.sh needs %.1f MiB = %.1f MiB (limit 64 MiB); all of .carry is %.1f MiB\n", t / 1048576, c / 1048576, (t + c) / 1048576, a / 1048576 }'
carry_json=$(for p in $ours; do printf '".carry/%s", ' "$p"; done | sed 's/, $//')
if [ $((tree_bytes + ours_bytes)) -gt "$LIMIT_BYTES" ]; then
  echo "prepare_carry: OVER the 64 MiB a device call carries; rerun with --no-data or trim" >&2
  exit 1
fi
if [ $((tree_bytes + all_bytes)) -gt "$LIMIT_BYTES" ]; then
  echo "prepare_carry: all of .carry is over the limit (others' files are in it): name only these paths in carry"
fi
echo "prepare_carry: done. Device call: carry [$carry_json], command: bash bench/device/check.sh, timeout_s 540"
