# thermoe forward through the program: routing summary, mixed expert types, save / load,
# --save refusing device nodes, FIFOs and directories and keeping an old file when a write
# fails, and every kind of bad input exiting non-zero with the problem named on stderr.
# usage: bash cli_forward.sh path/to/thermoe
set -u
BIN=${1:?usage: cli_forward.sh path/to/thermoe}
TMP=$(mktemp -d /tmp/thermoe-cli-XXXXXX) || exit 1
trap 'rm -rf "$TMP"' EXIT
fails=0

fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

# expect CODE NEEDLE args...: run thermoe, check the exit code and that NEEDLE is in
# stdout (code 0) or stderr (code != 0)
expect() {
    local code=$1 needle=$2
    shift 2
    "$BIN" "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    local where="$TMP/err"
    [ "$code" -eq 0 ] && where="$TMP/out"
    if [ "$rc" -ne "$code" ]; then
        fail "thermoe $* exited $rc, want $code; stderr: $(head -c 600 "$TMP/err")"
    elif ! grep -qF -- "$needle" "$where"; then
        fail "thermoe $*: '$needle' not in $( [ "$code" -eq 0 ] && echo stdout || echo stderr ): $(head -c 600 "$where")"
    fi
}

# the acceptance command: runs, prints the routing summary with one line per expert
expect 0 "routing (tokens per expert" forward --num-experts 8 --top-k 2 --expert-type q4
n=$(grep -cE '^  [0-7] +q4 +[0-9]+ ' "$TMP/out")
[ "$n" -eq 8 ] || fail "expected 8 q4 expert lines in the routing summary, got $n"
grep -q "experts used" "$TMP/out" || fail "no 'experts used' line"
grep -q "linear_fc1" "$TMP/out" || fail "no per-op time for linear_fc1"
tok=$(awk '/^  [0-7] +q4/ {s += $3} END {print s}' "$TMP/out")
[ "$tok" -eq 128 ] || fail "tokens per expert sum to $tok, want 64 tokens x top-2 = 128"

# mixed expert types, both impls, both activations, MoE-only
expect 0 "mixed expert types" forward --expert-type fp16,q4,q2,q4,fp16,q2,q4,q4 --act swiglu --impl unfused
grep -qE '^  2 +q2 ' "$TMP/out" || fail "expert 2 is not listed as q2"
grep -q "dequant_unpack" "$TMP/out" || fail "unfused run shows no dequant_unpack time"
expect 0 "MoE layer only" forward --expert-type q2,fp16,q4 --num-experts 3 --top-k 3 --moe-only --tokens 17 --impl fused
expect 0 "help" help forward
expect 0 "--save FILE" forward --help

# save, then load: same output; conflicting flags are refused
expect 0 "saved the block" forward --expert-type q4,q2,fp16,q4 --num-experts 4 --d-ff 256 --tokens 5 --save "$TMP/b.safetensors"
want=$(grep "output mean" "$TMP/out" | sed 's/.*output mean/mean/')
expect 0 "output mean" forward --load "$TMP/b.safetensors" --tokens 5
got=$(grep "output mean" "$TMP/out" | sed 's/.*output mean/mean/')
[ "$want" = "$got" ] || fail "loaded block gives '$got', saved one gave '$want'"
expect 0 "output mean" forward --load "$TMP/b.safetensors" --tokens 5 --num-experts 4 --expert-type q4,q2,fp16,q4
# bf16 experts: listed as bf16, saved as BF16 tensors and loaded back to the same output
expect 0 "saved the block" forward --expert-type bf16,q4,fp16,bf16 --num-experts 4 --d-ff 256 --tokens 5 --save "$TMP/bf.safetensors"
grep -qE '^  0 +bf16 ' "$TMP/out" || fail "expert 0 is not listed as bf16"
want=$(grep "output mean" "$TMP/out" | sed 's/.*output mean/mean/')
expect 0 "output mean" forward --load "$TMP/bf.safetensors" --tokens 5
got=$(grep "output mean" "$TMP/out" | sed 's/.*output mean/mean/')
[ "$want" = "$got" ] || fail "loaded bf16 block gives '$got', saved one gave '$want'"
expect 1 "--top-k 3 conflicts with $TMP/b.safetensors, which has 2" forward --load "$TMP/b.safetensors" --top-k 3
expect 1 "expert 1 is q2 in" forward --load "$TMP/b.safetensors" --expert-type q4
expect 1 "--act swiglu conflicts" forward --load "$TMP/b.safetensors" --act swiglu
head -c 1000 "$TMP/b.safetensors" >"$TMP/cut.safetensors"
expect 1 "$TMP/cut.safetensors" forward --load "$TMP/cut.safetensors"
grep -q "out of range\|exceeds" "$TMP/err" || fail "truncated file: no range message: $(cat "$TMP/err")"
printf 'garbage!garbage!' >"$TMP/junk.safetensors"
expect 1 "$TMP/junk.safetensors" forward --load "$TMP/junk.safetensors"
expect 1 "cannot open" forward --load "$TMP/missing.safetensors"
expect 2 "unknown layout 'gguf'" forward --layout gguf
expect 2 "--layout and --layer apply to --load FILE" forward --layer 3

# --save never replaces what is not a regular file: exit 1 naming it, left as it was. A
# private device node first (mknod, where allowed), so that a regression cannot take the
# system's /dev/null with it; then /dev/null, a FIFO and a directory.
dev_ok=1
if mknod "$TMP/nul" c 1 3 2>/dev/null; then
    expect 1 "$TMP/nul: is a character device; refusing to replace it" forward --save "$TMP/nul"
    [ -c "$TMP/nul" ] || { fail "--save replaced a device node"; dev_ok=0; }
fi
if [ "$dev_ok" -eq 1 ] && [ -c /dev/null ]; then
    expect 1 "/dev/null: is a character device; refusing to replace it" forward --save /dev/null
    [ -c /dev/null ] || fail "--save replaced /dev/null"
fi
mkfifo "$TMP/fifo"
expect 1 "$TMP/fifo: is a FIFO; refusing to replace it" forward --save "$TMP/fifo"
[ -p "$TMP/fifo" ] || fail "--save replaced a FIFO"
mkdir "$TMP/dir"
expect 1 "$TMP/dir: is a directory; refusing to replace it" forward --save "$TMP/dir"
[ -d "$TMP/dir" ] || fail "--save replaced a directory"
grep -q "routing (tokens per expert" "$TMP/out" && fail "--save to a directory ran the block first"
# a write that fails part way (the file size limit, like a full disk): exit 1, the old file
# byte for byte, no temporary, no success line
cp "$TMP/b.safetensors" "$TMP/keep.safetensors"
(ulimit -f 16 && trap '' XFSZ && exec "$BIN" forward --d-ff 256 --save "$TMP/keep.safetensors") \
    >"$TMP/out" 2>"$TMP/err"
rc=$?
[ "$rc" -eq 1 ] || fail "--save past the size limit exited $rc, want 1: $(cat "$TMP/err")"
cmp -s "$TMP/keep.safetensors" "$TMP/b.safetensors" || fail "a failed --save changed the old file"
grep -q "keep.safetensors: write failed: File too large (left unchanged)" "$TMP/err" ||
    fail "failed --save message: $(cat "$TMP/err")"
grep -q "saved the block" "$TMP/out" && fail "success line after a failed --save"
ls "$TMP" | grep -q '^keep\.safetensors\.tmp' && fail "temporary left: $(ls "$TMP")"

# bad configurations name the problem
expect 1 "top_k = 9 is larger than num_experts = 8" forward --top-k 9
expect 1 "d_model = 256 is not divisible by n_heads = 3" forward --n-heads 3
expect 2 "--d-model: 0 is out of range" forward --d-model 0
expect 2 "--d-ff: -5 is out of range" forward --d-ff -5
expect 2 "--num-experts: 'abc' is not an integer" forward --num-experts abc
expect 2 "--top-k: '2x' is not an integer" forward --top-k 2x
expect 2 "--seed: '-1' must be a non-negative integer" forward --seed -1
expect 2 "unknown type 'q3'" forward --expert-type q3
expect 2 "entry 2 'int8' is not fp16, bf16, q4 or q2" forward --expert-type q4,int8,q4,q4,q4,q4,q4,q4
expect 2 "2 types listed but --num-experts is 8" forward --expert-type fp16,q4
expect 1 "input dimension 256 is not a multiple of the group size 100" forward --expert-type q4 --group-size 100
expect 2 "--tokens: 0 is out of range" forward --tokens 0
expect 2 "unknown backend 'tpu'" forward --backend tpu
expect 2 "unexpected argument 'extra'" forward extra
expect 2 "see 'thermoe forward --help'" forward --bogus
expect 2 "see 'thermoe forward --help'" forward --top-k
expect 2 "unknown command 'frobnicate'" frobnicate

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed" >&2
    exit 1
fi
echo "cli_forward: all checks passed"
