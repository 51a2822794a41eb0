#!/usr/bin/env bash
# Install (as root) or name (otherwise) the Debian packages thermoe needs to build and test.
#   build:   gcc, cmake (>= 3.25), ninja, pkg-config
#   libs:    jansson (JSON), sqlite3 (nsys exports), GSL (statistics), cmocka (tests)
#   figures: gnuplot (thermoe analyze renders figures with it; optional at run time)
#   --with-mpi: Open MPI too (expert-parallel runs start one process per GPU with mpirun; the
#               tests build that code and check the 2-process error path), clang-format
#               (the tests check that every source file is formatted), and Python 3 with cffi,
#               numpy, pandas and pytest (tests/python: the thermoe package under ctest; its
#               torch and transformers tests skip when those are absent)
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config libjansson-dev libsqlite3-dev libgsl-dev
      libcmocka-dev gnuplot-nox)
[ "${1:-}" = --with-mpi ] && pkgs+=(libopenmpi-dev openmpi-bin clang-format python3 python3-cffi
                                    python3-numpy python3-pandas python3-pytest)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "thermoe: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  echo "thermoe: missing Debian packages; install them as root with:" >&2
  echo "  apt-get install ${missing[*]}" >&2
  exit 1
fi
