# shellcheck shell=bash
# Sourced by the GPU bench scripts (repo root, GPU machine): the libraries of .devdeps, the
# card and driver into $OUT/env.txt, a Release CUDA build for Hopper in build-gpu (targets
# $1, default all; its log in $OUT/build.log), and el, the seconds since it was sourced.
[ -f scripts/device-env.sh ] && source scripts/device-env.sh
t0=$(date +%s)
el() { local s=$?; echo "[$(( $(date +%s) - t0 )) s]"; return $s; } # keeps $? for "$(el) rc=$?"
gpu_build() {
  mkdir -p "$OUT"
  { nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit,temperature.gpu,temperature.memory \
      --format=csv; date -u; } 2>&1 | tee "$OUT/env.txt"
  # shellcheck disable=SC2086
  cmake -S . -B build-gpu -G Ninja -DTHERMOE_CUDA=ON -DTHERMOE_CUDA_ARCH=90 \
    -DCMAKE_BUILD_TYPE=Release >"$OUT/build.log" 2>&1 &&
    cmake --build build-gpu -j"$(nproc)" ${1:+--target $1} >>"$OUT/build.log" 2>&1 ||
    { tail -40 "$OUT/build.log"; return 1; }
  echo "$(el) built"
}
# The device returns at most 8 files: pack everything under $1 (files and folders) into
# $1/out.tgz and remove it, so that logs, tables and run folders all come back. The tables a
# script prints are in the call's output as well.
pack_out() {
  local d=$1 items
  items=$(cd "$d" && find . -mindepth 1 -maxdepth 1 ! -name out.tgz -printf '%P\n')
  [ -n "$items" ] || return 0
  # shellcheck disable=SC2086
  (cd "$d" && tar czf out.tgz $items && rm -rf $items) &&
    echo "$(el) packed $(echo $items | wc -w) files and folders into $d/out.tgz ($(du -h "$d/out.tgz" | cut -f1))"
}
