#!/usr/bin/env bash
# Prepare .devdeps/: Debian's -dev packages for jansson, GSL, cmocka and sqlite3 unpacked
# into a private prefix, so thermoe builds on a GPU machine that has no package access.
# Use there with:  source scripts/device-env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .devdeps/debs .devdeps/root
(cd .devdeps/debs && apt-get download libjansson-dev libjansson4 libgsl-dev libgsl27 \
   libgslcblas0 libcmocka-dev libcmocka0 libsqlite3-dev libsqlite3-0 >/dev/null)
for f in .devdeps/debs/*.deb; do dpkg -x "$f" .devdeps/root; done
root=$(pwd)/.devdeps/root
for pc in .devdeps/root/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc; do
  sed -i -e "s|^prefix=.*|prefix=\${pcfiledir}/../../..|" -e "s|=/usr/|=\${prefix}/|" -e "s|=/usr\$|=\${prefix}|" "$pc"
done
rm -rf .devdeps/debs
du -sh .devdeps
