# basic.sh: the dispatcher and option handling: --version, usage, -h of each command with live
# defaults, usage errors (exit 1, one line on stderr, nothing on stdout).
. "$(dirname "$0")/lib.bash"

ver=$(sed -n 's/^#define MD_VERSION "\(.*\)"/\1/p' "$ROOT/lib/md.h")
run 0 "$BIN" --version
[ "$(cat "$T/out")" = "mamba-dna $ver" ] || fail "--version printed '$(cat "$T/out")'"
lines "$T/out" 1

# no command: the list on stderr, exit 1
run 1 "$BIN"
[ -s "$T/out" ] && fail "usage went to stdout"
for c in embed predict info score pretrain; do has "$T/err" "  $c"; done
has "$T/err" "Exit codes"
# unknown command
run 1 "$BIN" frobnicate
has "$T/err" "unknown command 'frobnicate'"
# help on stdout
run 0 "$BIN" --help
has "$T/out" "Usage:   mamba-dna <command>"

# -h of each command: stdout, exit 0, live defaults
for c in embed predict; do
    run 0 "$BIN" $c -h
    has "$T/out" "Usage: mamba-dna $c [options] IN..."
    has "$T/out" "-w, --window INT"
    has "$T/out" "--rc STR"
    has "$T/out" "-d, --device STR      cpu, cuda or auto [auto]"
    has "$T/out" "Exit codes"
    [ -s "$T/err" ] && fail "$c -h wrote to stderr"
    # defaults are live: options given before -h show up
    run 0 "$BIN" $c -w 512 -s 256 -t 3 -d cpu --batch-tokens 4096 -h
    has "$T/out" "[512]"
    has "$T/out" "[256]"
    has "$T/out" "compute threads [3]"
    has "$T/out" "cpu, cuda or auto [cpu]"
    has "$T/out" "tokens per packed forward call [4096]"
done
run 0 "$BIN" embed -h
has "$T/out" "[mean]"
has "$T/out" "--layer INT"
run 0 "$BIN" embed --pool none --rc none -h
has "$T/out" "one row per base) [none]"
hasnt "$T/out" "[average]"
run 0 "$BIN" predict -h
has "$T/out" "chrom pos ref pA pC pG pT entropy"
hasnt "$T/out" "--pool"
run 0 "$BIN" info -h
has "$T/out" "Usage: mamba-dna info [options] [MODEL_DIR]"
has "$T/out" "--json"

# usage errors: exit 1, one line on stderr, nothing on stdout
usage_err() {
    local what=$1; shift
    run 1 "$BIN" "$@"
    [ -s "$T/out" ] && fail "stdout not empty for: $*"
    lines "$T/err" 1
    has "$T/err" "$what"
}
fa=$CONF/ph_d128_n2/input_L1000.fa
usage_err "unknown option '--bogus'" embed --bogus "$fa"
usage_err "unknown option '-x'" predict -x "$fa"
usage_err "option '-w' needs an argument" embed -w
usage_err "option '--pool' needs an argument" embed "$fa" --pool
usage_err "--pool: 'max' is not one of mean, none" embed --pool max "$fa"
usage_err "--rc: 'both' is not one of average, none" embed --rc both "$fa"
usage_err "-d/--device: 'gpu' is not one of cpu, cuda, auto" embed -d gpu "$fa"
usage_err "-t/--threads: 'many' is not an integer" embed -t many "$fa"
usage_err "-t/--threads: 0 is out of range" embed -t 0 "$fa"
usage_err "-w/--window: '-5' is out of range (at least 0)" embed -w -5 "$fa"
usage_err "-w/--window: '1x' is not a number" embed -w 1x "$fa"
usage_err "-s/--stride 600 is larger than the window 500" embed -w 500 -s 600 "$fa"
usage_err "-s/--stride needs a window length" embed -s 100 "$fa"
usage_err "--precision: 'fp8' is not one of fp32, bf16" embed --precision fp8 "$fa"
usage_err "--half needs a .npy output" embed --half "$fa"
usage_err "--pool is an embed option" predict --pool mean "$fa"
usage_err "--layer is an embed option" predict --layer 1 "$fa"
usage_err "no input" embed
usage_err "-F/--excl-flags: 'abc' is not a SAM flag value" embed -F abc "$fa"
usage_err "unknown option '--json'" embed --json "$fa"
usage_err "expected one MODEL_DIR, got 2" info a b
usage_err "standard input ('-') can be read only once" embed - -

done_ok
