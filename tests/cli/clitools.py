"""Helpers for the command-line tests (tests/cli/*.sh): reading mamba-dna outputs and making
inputs. Imported by the `py` helper of lib.bash with /usr/bin/python3 (numpy only)."""
import numpy as np

COMP = {'A': 'T', 'C': 'G', 'G': 'C', 'T': 'A', 'N': 'N',
        'a': 't', 'c': 'g', 'g': 'c', 't': 'a', 'n': 'n'}


def read_fasta(path):
    recs, name, seq = [], None, []
    for line in open(path):
        line = line.rstrip('\n')
        if line.startswith('>'):
            if name is not None:
                recs.append((name, ''.join(seq)))
            name, seq = line[1:].split()[0], []
        elif line:
            seq.append(line.strip())
    if name is not None:
        recs.append((name, ''.join(seq)))
    return recs


def write_fasta(path, recs, width=60):
    with open(path, 'w') as f:
        for name, s in recs:
            f.write('>%s\n' % name)
            for i in range(0, len(s), width):
                f.write(s[i:i + width] + '\n')
            if not s:
                f.write('\n')


def revcomp(s):
    return ''.join(COMP[c] for c in reversed(s))


def load_tsv(path):
    """TSV of mamba-dna: '#' lines skipped; returns (header columns, list of key tuples, values)."""
    header, keys, vals = None, [], []
    for line in open(path):
        line = line.rstrip('\n')
        if line.startswith('##'):
            continue
        if line.startswith('#'):
            header = line[1:].split('\t')
            continue
        f = line.split('\t')
        keys.append(tuple(f[:3]))
        vals.append([float(x) for x in f[3:]])
    return header, keys, np.array(vals, dtype=np.float64)


def load_bed(path):
    rows = []
    for line in open(path):
        f = line.rstrip('\n').split('\t')
        assert len(f) == 8, f
        rows.append((f[0], int(f[1]), int(f[2]), f[3], f[4], f[5], int(f[6]), int(f[7])))
    return rows


def relerr(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def close(a, b, tol, what=''):
    e = relerr(a, b)
    assert e <= tol, '%s: relative error %.3g > %.3g' % (what, e, tol)
    return e


def softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def load_safetensors(path):
    import json
    import struct
    f = open(path, 'rb')
    n = struct.unpack('<Q', f.read(8))[0]
    h = json.loads(f.read(n))
    h.pop('__metadata__', None)
    buf = f.read()
    dt = {'F32': np.float32, 'I64': np.int64, 'F16': np.float16, 'I32': np.int32}
    out = {}
    for k, v in h.items():
        a, b = v['data_offsets']
        out[k] = np.frombuffer(buf[a:b], dtype=dt[v['dtype']]).reshape(v['shape'])
    return out


def save_safetensors(path, tensors):
    import json
    import struct
    header, off, blobs = {}, 0, []
    for k, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        b = a.tobytes()
        header[k] = {'dtype': 'F32', 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def make_mamba(folder, d=16, n_layer=2, seed=1):
    """A small random causal Mamba LM (mamba_ssm MambaLMHeadModel layout, Caduceus vocabulary)."""
    import json
    import os
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    Di, N, K, R, V = 2 * d, 16, 4, (d + 15) // 16, 16
    cfg = {'architectures': ['MambaLMHeadModel'], 'model_type': 'mamba', 'd_model': d,
           'n_layer': n_layer, 'vocab_size': 12, 'pad_vocab_size_multiple': 8, 'rms_norm': True,
           'residual_in_fp32': True, 'fused_add_norm': True, 'tokenizer': 'caduceus',
           'ssm_cfg': {'d_state': N, 'd_conv': K, 'expand': 2}}
    json.dump(cfg, open(folder + '/config.json', 'w'), indent=1)
    t = {'backbone.embedding.weight': rng.normal(0, 0.5, (V, d))}
    for i in range(n_layer):
        p = 'backbone.layers.%d.mixer.' % i
        t[p + 'in_proj.weight'] = rng.normal(0, 0.2, (2 * Di, d))
        t[p + 'conv1d.weight'] = rng.normal(0, 0.3, (Di, 1, K))
        t[p + 'conv1d.bias'] = rng.normal(0, 0.1, (Di,))
        t[p + 'x_proj.weight'] = rng.normal(0, 0.2, (R + 2 * N, Di))
        t[p + 'dt_proj.weight'] = rng.normal(0, 0.2, (Di, R))
        t[p + 'dt_proj.bias'] = np.log(np.expm1(rng.uniform(0.001, 0.1, Di)))
        t[p + 'A_log'] = np.log(np.tile(np.arange(1, N + 1, dtype=np.float64), (Di, 1)))
        t[p + 'D'] = np.ones(Di)
        t[p + 'out_proj.weight'] = rng.normal(0, 0.2, (d, Di))
        t['backbone.layers.%d.norm.weight' % i] = 1 + rng.normal(0, 0.1, d)
    t['backbone.norm_f.weight'] = 1 + rng.normal(0, 0.1, d)
    save_safetensors(folder + '/model.safetensors', t)
