# thermoe monitor and info: CSV logging on the simulated GPU, clean stop on SIGINT, a CSV
# that cannot be written (a device node, a write failing part way) as an error with no
# success message and an old file kept, forced nvml without the library, usage errors, info
# against the fake libnvidia-ml.
set -euo pipefail
bin=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$bin" monitor --help | grep -q -- "--interval MS" || fail "help lists --interval"
"$bin" monitor --telemetry sim --duration 0.5 --refresh 100 --csv "$dir/a.csv" --sim-devices 2 \
    --sim-load 0.5 >"$dir/out.txt" 2>"$dir/err.txt" || fail "sim monitor exit"
grep -q "telemetry: sim" "$dir/err.txt" || fail "source line"
head -1 "$dir/a.csv" | grep -q "^source,device,t_s,gpu_temp_c" || fail "csv header"
rows=$(tail -n +2 "$dir/a.csv" | wc -l)
[ "$rows" -ge 10 ] || fail "csv rows $rows"
grep -q "^sim,1," "$dir/a.csv" || fail "second device rows"
grep -q "SIMULATED" "$dir/out.txt" || fail "view says simulated"
# --plain (and stdout not a terminal): no escape codes, not even erase-to-end-of-line
"$bin" monitor --telemetry sim --duration 0.3 --refresh 100 --plain >"$dir/plain.txt" 2>/dev/null ||
    fail "--plain exit"
grep -q "SIMULATED" "$dir/plain.txt" || fail "--plain printed no view"
if LC_ALL=C grep -q "$(printf '\033')" "$dir/plain.txt" "$dir/out.txt"; then
    fail "--plain output holds escape codes: $(od -c "$dir/plain.txt" | grep -m1 '033')"
fi

# SIGINT: wait (no fixed timing) until rows appear in the temporary, then interrupt; exit 0
# and a full CSV under its own name
"$bin" monitor --telemetry sim --refresh 50 --csv "$dir/b.csv" >/dev/null 2>"$dir/err2.txt" &
pid=$!
for _ in $(seq 1 600); do
  [ -s "$dir/b.csv.tmp.$pid" ] && [ "$(wc -l <"$dir/b.csv.tmp.$pid")" -ge 3 ] && break
  sleep 0.05
done
[ -s "$dir/b.csv.tmp.$pid" ] || fail "no rows in the temporary $dir/b.csv.tmp.$pid while running"
kill -INT "$pid"
wait "$pid" || fail "SIGINT exit status $?"
grep -q "interrupted" "$dir/err2.txt" || fail "interrupted message"
tail -c 1 "$dir/b.csv" | od -c | grep -q '\\n' || fail "csv ends with a full line"
[ ! -e "$dir/b.csv.tmp.$pid" ] || fail "temporary left after SIGINT"

# a CSV that cannot be written is an error: exit 1, the reason named, no "CSV written".
# /dev/full (a device node) is refused before sampling and stays a device.
set +e
"$bin" monitor --telemetry sim --duration 0.2 --refresh 50 --csv /dev/full >/dev/null 2>"$dir/full.txt"
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "--csv /dev/full exit $rc, want 1: $(cat "$dir/full.txt")"
grep -q "/dev/full: is a character device; refusing to replace it" "$dir/full.txt" || fail "/dev/full: $(cat "$dir/full.txt")"
grep -q "CSV written" "$dir/full.txt" && fail "success message after --csv /dev/full"
[ -c /dev/full ] || fail "/dev/full is no longer a device"
# a write failing part way (the file size limit fails it like a full disk): an old CSV is
# kept byte for byte, no temporary is left behind
printf 'old,csv\n' >"$dir/c.csv"
set +e
(ulimit -f 2 && trap '' XFSZ && exec "$bin" monitor --telemetry sim --duration 3 --interval 5 \
    --refresh 50 --csv "$dir/c.csv") >/dev/null 2>"$dir/lim.txt"
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "CSV past the size limit exit $rc, want 1: $(cat "$dir/lim.txt")"
grep -q "$dir/c.csv: write failed: File too large" "$dir/lim.txt" || fail "no write failure: $(cat "$dir/lim.txt")"
grep -q "CSV written" "$dir/lim.txt" && fail "'CSV written' after a failed write"
[ "$(cat "$dir/c.csv")" = "old,csv" ] || fail "a failed write changed the old CSV: $(head -c 200 "$dir/c.csv")"
ls "$dir" | grep -q '^c\.csv\.tmp' && fail "temporary left: $(ls "$dir")"

# forced nvml without the library: exit 1 naming the reason
set +e
THERMOE_NVML_LIB=/nonexistent/libnvidia-ml.so.1 "$bin" monitor --telemetry nvml --duration 0.1 \
    2>"$dir/err3.txt"
rc=$?
"$bin" monitor --interval 0 2>/dev/null
rc2=$?
"$bin" monitor --telemetry gpu 2>/dev/null
rc3=$?
set -e
[ "$rc" -eq 1 ] || fail "forced nvml rc $rc"
grep -q "library not found" "$dir/err3.txt" || fail "reason named"
[ "$rc2" -eq 2 ] && [ "$rc3" -eq 2 ] || fail "usage errors exit 2 ($rc2, $rc3)"

# info against the fake NVML built with the tests
fake=$(dirname "$bin")/libfake_nvml.so
if [ -f "$fake" ]; then
  THERMOE_NVML_LIB=$fake FAKE_NVML_UNSUPPORTED=fan "$bin" info >"$dir/info.txt"
  grep -q "nvml  loaded; 1 device answered" "$dir/info.txt" || fail "info nvml"
  grep -q "not supported: fan_pct" "$dir/info.txt" || fail "info fields"
  grep -q "auto  -> nvml" "$dir/info.txt" || fail "info auto"
fi
if [ -f "$fake" ]; then
  # a GPU lost mid-run: the run goes on, the loss is reported at the end, exit 0
  THERMOE_NVML_LIB=$fake FAKE_NVML_LOST_AFTER=3 "$bin" monitor --telemetry nvml --duration 0.3 \
      --refresh 100 --csv "$dir/lost.csv" >"$dir/lost.txt" 2>"$dir/lost_err.txt" || fail "lost rc"
  grep -q "device 0 was lost" "$dir/lost_err.txt" || fail "lost reported"
  grep -q "LOST" "$dir/lost.txt" || fail "lost in view"
  grep -q "^nvml,0,[0-9.]*,,,,,,,,,,,,,,,,$" "$dir/lost.csv" || fail "lost rows are empty"
fi
THERMOE_NVML_LIB=/nonexistent/x.so "$bin" info | grep -q "auto  -> sim" || fail "info auto sim"

# overhead mode runs (its number goes to the benchmark notes, not asserted here)
"$bin" monitor --overhead --telemetry sim --duration 0.3 | grep -q "% of one core" || fail "overhead"
echo "cli_monitor: ok"
