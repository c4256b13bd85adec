# info.sh: `mamba-dna info` on the conformance checkpoints (text and --json), the default-model
# lookup through $MAMBA_DNA_MODEL, and model-folder errors.
. "$(dirname "$0")/lib.bash"
need_model

for m in ph_d128_n2 ps_d128_n3; do
    sha=$(sha256sum "$CONF/$m/model.safetensors" | cut -d' ' -f1)
    run 0 "$BIN" info "$CONF/$m"
    has "$T/out" "sha256          $sha"
    has "$T/out" "d_model         128"
    has "$T/out" "d_inner         256"
    has "$T/out" "d_state         16"
    has "$T/out" "dt_rank         8"
    has "$T/out" "vocab           12 (padded 16)"
    has "$T/out" "tokenizer       caduceus"
    has "$T/out" "trained_length  unknown"
    has "$T/out" "architecture    CaduceusForMaskedLM"
    run 0 "$BIN" info --json "$CONF/$m"
    cp "$T/out" "$T/$m.json"
done
run 0 "$BIN" info "$CONF/ph_d128_n2"
has "$T/out" "variant         Caduceus-Ph"
has "$T/out" "n_layer         2"
has "$T/out" "dtypes          F32"
has "$T/out" "hidden_width    128"
run 0 "$BIN" info -m "$CONF/ps_d128_n3"
has "$T/out" "variant         Caduceus-PS"
has "$T/out" "n_layer         3"
has "$T/out" "hidden_width    256"

# JSON: parameter counts from the parameter table equal the safetensors contents (Ph: every
# tensor is a parameter; PS: plus the two int64 complement-map buffers of 16 entries)
py "
import struct
for m, width, nl, var in (('ph_d128_n2', 128, 2, 'Caduceus-Ph'), ('ps_d128_n3', 256, 3, 'Caduceus-PS')):
    j = json.load(open('$T/' + m + '.json'))
    assert j['variant'] == var and j['hidden_width'] == width and j['n_layer'] == nl, j
    assert j['d_model'] == 128 and j['vocab_size'] == 12 and j['vocab_size_padded'] == 16
    assert j['trained_length'] is None and j['tokenizer'] == 'caduceus'
    f = open('$CONF/' + m + '/model.safetensors', 'rb')
    n = struct.unpack('<Q', f.read(8))[0]
    h = json.loads(f.read(n))
    h.pop('__metadata__', None)
    numel = {k: int(np.prod(v['shape'])) for k, v in h.items()}
    floats = sum(v for k, v in numel.items() if h[k]['dtype'] in ('F32', 'F16', 'BF16'))
    assert j['file_elements'] == sum(numel.values()), (j['file_elements'], sum(numel.values()))
    assert j['parameters'] == floats, (j['parameters'], floats)
    assert j['file_tensors'] == len(h)
    assert sorted(j['dtypes']) == sorted(set(v['dtype'] for v in h.values())), j['dtypes']
    import hashlib
    assert j['sha256'] == hashlib.sha256(open('$CONF/' + m + '/model.safetensors', 'rb').read()).hexdigest()
"

# --no-sha256
run 0 "$BIN" info --no-sha256 "$CONF/ph_d128_n2"
has "$T/out" "(not computed)"

# default model through $MAMBA_DNA_MODEL; -v says which model was used
MAMBA_DNA_MODEL=$CONF/ps_d128_n3 run 0 "$BIN" info -v
has "$T/out" "Caduceus-PS"
has "$T/err" "(from \$MAMBA_DNA_MODEL)"
has "$T/err" "[M::main] Real time:"
has "$T/err" "Peak RSS:"
MAMBA_DNA_MODEL=$T/nowhere run 2 "$BIN" info
has "$T/err" "MAMBA_DNA_MODEL='$T/nowhere' is not a model folder"

# default model next to the binary: <bindir>/models/default, <bindir>/../share/mamba-dna/models/default
cd "$T"
mkdir -p "$T/inst/bin" "$T/inst/share/mamba-dna/models" "$T/bare"
cp "$BIN" "$T/inst/bin/mamba-dna"
ln -s "$CONF/ps_d128_n3" "$T/inst/share/mamba-dna/models/default"
env -u MAMBA_DNA_MODEL "$T/inst/bin/mamba-dna" info -v --no-sha256 >"$T/out" 2>"$T/err" || fail "installed layout"
has "$T/out" "Caduceus-PS"
has "$T/err" "inst/bin/../share/mamba-dna/models/default (default model; $CONF/ps_d128_n3)"
mkdir -p "$T/inst/bin/models"
ln -s "$CONF/ph_d128_n2" "$T/inst/bin/models/default"
env -u MAMBA_DNA_MODEL "$T/inst/bin/mamba-dna" info --no-sha256 >"$T/out" 2>"$T/err" || fail "bindir layout"
has "$T/out" "Caduceus-Ph"
# $MAMBA_DNA_MODEL wins over the folders, -m over both
MAMBA_DNA_MODEL=$CONF/ps_d128_n3 run 0 "$T/inst/bin/mamba-dna" info --no-sha256
has "$T/out" "Caduceus-PS"
MAMBA_DNA_MODEL=$CONF/ps_d128_n3 run 0 "$T/inst/bin/mamba-dna" info --no-sha256 -m "$CONF/ph_d128_n2"
has "$T/out" "Caduceus-Ph"
# none found: a clear error listing what was tried
cp "$BIN" "$T/bare/mamba-dna"
rc=0; env -u MAMBA_DNA_MODEL "$T/bare/mamba-dna" embed "$CONF/ph_d128_n2/input_L1000.fa" >"$T/out" 2>"$T/err" || rc=$?
[ $rc -eq 2 ] || fail "no default model: exit $rc"
has "$T/err" "no model given and no default model found; use -m DIR or set \$MAMBA_DNA_MODEL"
has "$T/err" "$T/bare/models/default"
cd "$ROOT"

# model folder errors name the path
mkdir -p "$T/empty_model"
run 2 "$BIN" info "$T/empty_model"
has "$T/err" "$T/empty_model/config.json"
lines "$T/err" 1
run 2 "$BIN" info "$T/does_not_exist"
has "$T/err" "$T/does_not_exist"
cp "$CONF/ph_d128_n2/config.json" "$T/empty_model/"
run 2 "$BIN" info "$T/empty_model"
has "$T/err" "model.safetensors"
printf '{"d_model": 128, "n_layer": ' >"$T/empty_model/config.json"
run 2 "$BIN" info "$T/empty_model"
has "$T/err" "config.json: invalid JSON"

done_ok
