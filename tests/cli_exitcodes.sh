# Exit codes of every subcommand, as the README promises them: 0 success, 1 a failure (a file
# that is missing, unreadable or not a regular file), 2 a usage error (unknown flag, a bad
# flag value). Every command runs under `timeout 10`, so one that blocks (on a FIFO, say)
# fails with 124 instead of hanging the suite.
# usage: bash tests/cli_exitcodes.sh path/to/thermoe
set -u
BIN=${1:?usage: cli_exitcodes.sh path/to/thermoe}
TMP=$(mktemp -d /tmp/thermoe-exit-XXXXXX) || exit 1
trap 'rm -rf "$TMP"' EXIT
fails=0

# expect CODE NEEDLE args...: thermoe ARGS exits CODE and NEEDLE is in its stdout + stderr
# (an empty NEEDLE checks the code only)
expect() {
    local code=$1 needle=$2
    shift 2
    timeout 10 "$BIN" "$@" >"$TMP/out" 2>&1 </dev/null
    local rc=$?
    if [ "$rc" -ne "$code" ]; then
        echo "FAIL: thermoe $* exited $rc, want $code:"
        head -c 600 "$TMP/out" | sed 's/^/    /'
        fails=$((fails + 1))
    elif [ -n "$needle" ] && ! grep -qF -- "$needle" "$TMP/out"; then
        echo "FAIL: thermoe $*: output lacks '$needle':"
        head -c 600 "$TMP/out" | sed 's/^/    /'
        fails=$((fails + 1))
    fi
}

# ---- special files: refused at once, named in the message ----------------------------------
mkfifo "$TMP/fifo"
expect 1 "$TMP/fifo: is a FIFO" forward --load "$TMP/fifo"
expect 1 "/dev/zero: is a character device" forward --load /dev/zero
expect 1 "is a directory" forward --load "$TMP"

# ---- every subcommand (src/cli/main.c's table) ----------------------------------------------
# --help exits 0, and so does 'thermoe help CMD'; an unknown flag exits 2
for cmd in help version info run profile op monitor forward import cost analyze sweep eval generate; do
    expect 0 "" "$cmd" --help
    expect 0 "" help "$cmd"
    expect 2 "thermoe $cmd" "$cmd" --no-such-flag
done
expect 2 "" help no-such-command
expect 2 "" no-such-command
# a missing or extra argument is a usage error too
for cmd in info version run profile monitor forward; do
    expect 2 "unexpected argument" "$cmd" unexpected-argument
done
expect 2 "unexpected argument" op --op relu unexpected-argument
expect 2 "--op is required" op
expect 2 "" import
expect 2 "" import nsys
expect 2 "" cost
expect 2 "" cost show
expect 2 "" analyze
expect 2 "--model DIR is required" eval --tokens "$TMP/none.tok"
expect 2 "--tokens FILE is required" eval --model "$TMP"
expect 2 "--tokens FILE is required" generate --model "$TMP"
expect 2 "--model DIR is required" generate --tokens "$TMP/none.tok"
expect 2 "seq-len" eval --seq-len abc
expect 2 "max-new" generate --max-new -3
expect 2 "--expert-type" eval --expert-type q7
for sub in eval run serve; do
    expect 2 "--expert-activations: 'int4' is not fp16 or int8" $sub --expert-activations int4
done
expect 2 "--expert-activations applies to a decoder LM" run --model random --expert-activations int8
expect 2 "--energy-counter-ms: -1 is out of range" run --energy-counter-ms -1
expect 1 "" eval --model "$TMP/no-such-model" --tokens "$TMP/none.tok"
expect 2 "" sweep
expect 2 "--load FILE, which is missing" forward --layer 1
expect 2 "--placement-file" run --placement file

# a value that is no number, out of range or no known name, for a flag that wants one, exits 2
# (the message names the flag)
bad_value() { # bad_value NEEDLE args...
    local needle=$1
    shift
    expect 2 "$needle" "$@"
}
bad_value "--batch-size" run --batch-size abc
bad_value "--batch-size" run --batch-size 0
bad_value "--arrival-rate" run --arrival-rate fast
bad_value "--seed" run --seed -1
bad_value "--ttha-budget-gain" run --ttha-budget-gain -1
bad_value "--lm-steps" run --lm-steps sideways
bad_value "--d-model" run --d-model 12x
bad_value "--workloads" run --workloads no_such_workload
bad_value "--expert-type" run --expert-type q3
bad_value "--backend" run --backend tpu
bad_value "--min-calls" profile --min-calls abc
bad_value "--tokens" profile --tokens 1,two
bad_value "--ops" profile --ops no_such_op
bad_value "--tool-timeout" profile --tool-timeout soon
bad_value "--num-experts" profile --num-experts many
bad_value "--with" profile --with perf
bad_value "--tokens" op --op relu --tokens abc
bad_value "--iters" op --op relu --iters 1e3
bad_value "--working-set-mb" op --op relu --working-set-mb big
bad_value "--top-k" op --op relu --top-k x
bad_value "--op" op --op no_such_op
bad_value "--impl" op --op relu --impl both
bad_value "--interval" monitor --interval abc
bad_value "--duration" monitor --duration forever
bad_value "--tokens" forward --tokens abc
bad_value "--layer" forward --layer one
bad_value "--seed" forward --seed x
bad_value "--d-ff" forward --d-ff 1.5
bad_value "--backend" forward --backend tpu
bad_value "--layout" forward --layout llama
bad_value "--tokens" import nsys "$TMP/x.sqlite" --tokens abc
bad_value "--expert-type" import nsys "$TMP/x.sqlite" --expert-type q3
bad_value "--bootstrap" analyze --bootstrap abc "$TMP"
bad_value "--seed" analyze --seed abc "$TMP"
bad_value "--gpus" sweep --emit bash --out "$TMP/sw" --gpus abc
bad_value "--batch-size" sweep --emit bash --out "$TMP/sw" --batch-size abc
bad_value "--routing-strategy" sweep --emit bash --out "$TMP/sw" --routing-strategy nope

# a file argument that does not exist exits 1 and names the file
expect 1 "$TMP/absent.safetensors" forward --load "$TMP/absent.safetensors"
expect 1 "$TMP/absent.sqlite" import nsys "$TMP/absent.sqlite"
expect 1 "$TMP/absent.csv" import ncu "$TMP/absent.csv"
expect 1 "$TMP/absent.json" cost show "$TMP/absent.json"
expect 1 "$TMP/absent.json" cost merge "$TMP/out.json" "$TMP/absent.json"
expect 1 "$TMP/absent-run" analyze "$TMP/absent-run"
expect 1 "$TMP/absent.json" run --config "$TMP/absent.json"

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "cli_exitcodes: all checks passed"
