# lib.bash: helpers sourced by the command-line tests (tests/cli/*.sh, each run as
# `bash tests/cli/NAME.sh /abs/path/to/mamba-dna` from the repository root).
#   run EXPECTED_EXIT CMD...   runs CMD with stdout in $T/out, stderr in $T/err; fails unless
#                              the exit status is EXPECTED_EXIT
#   has FILE TEXT / hasnt FILE TEXT   fixed-string checks on a file
#   py CODE                    runs /usr/bin/python3 (numpy) with CODE after
#                              'from clitools import *' (T and CONF are set)
set -eu
BIN=${1:?usage: bash $0 /abs/path/to/mamba-dna}
[ -x "$BIN" ] || { echo "FAIL: $BIN is not executable" >&2; exit 1; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CONF=$ROOT/tests/data/conformance
PY=/usr/bin/python3
T=$(mktemp -d "${TMPDIR:-/tmp}/mamba-dna-cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
NCHECK=0

fail() { local n=${#BASH_LINENO[@]}; echo "FAIL ($(basename "$0"):${BASH_LINENO[$((n - 2))]}): $*" >&2; \
         [ -s "$T/err" ] && { echo "--- stderr:" >&2; head -c 2000 "$T/err" >&2; }; exit 1; }

run() {
    local want=$1; shift
    local rc=0
    "$@" >"$T/out" 2>"$T/err" || rc=$?
    NCHECK=$((NCHECK + 1))
    [ "$rc" -eq "$want" ] || fail "exit $rc (expected $want): $*"
}

has() { NCHECK=$((NCHECK + 1)); grep -qF -- "$2" "$1" || fail "'$2' not in $1: $(head -c 600 "$1")"; }
hasnt() { NCHECK=$((NCHECK + 1)); ! grep -qF -- "$2" "$1" || fail "'$2' unexpectedly in $1"; }
lines() { NCHECK=$((NCHECK + 1)); local n; n=$(wc -l <"$1"); [ "$n" -eq "$2" ] || fail "$1 has $n lines, expected $2"; }

py() { NCHECK=$((NCHECK + 1)); "$PY" -c "import numpy as np, sys, json
sys.path.insert(0, '$ROOT/tests/cli')
from clitools import *
T = '$T'
CONF = '$CONF'
$1" || fail "python check failed"; }

# Model tests need a working binary; skip (exit 0) only when the model code cannot run at all.
need_model() {
    if ! "$BIN" info --no-sha256 "$CONF/ph_d128_n2" >/dev/null 2>&1; then
        echo "skip: $(basename "$0"): 'mamba-dna info' does not run on the conformance checkpoint"
        exit 0
    fi
}

done_ok() { echo "ok: $(basename "$0"): $NCHECK checks"; }
