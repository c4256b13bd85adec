#!/usr/bin/python3
"""make_seeds.py: writes the seeds of fuzz_safetensors, fuzz_npy and fuzz_config
(tests/fuzz/corpus/<target without fuzz_>/).

Small, real-looking inputs: a toy Caduceus checkpoint and one file per dtype for safetensors
(laid out as the reference writer does: header padded with spaces to 8 bytes, data contiguous),
numpy-written .npy files in format 1.0/2.0/3.0, and config.json files of the released models.
Run with /usr/bin/python3 (numpy) from the repository root; the output is committed.
"""
import io
import json
import os
import struct

import numpy as np
from numpy.lib import format as npf

HERE = os.path.dirname(os.path.abspath(__file__))


def out(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- safetensors -------------------------------------------------------------------------------

ST_DTYPE = {np.float32: "F32", np.float16: "F16", np.float64: "F64", np.int64: "I64",
            np.int32: "I32", np.uint8: "U8"}


def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, array) or (name, 'BF16', uint16 array)."""
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for t in tensors:
        if len(t) == 3:
            name, dt, a = t
        else:
            name, a = t
            dt = ST_DTYPE[a.dtype.type]
        b = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


rng = np.random.default_rng(7)


def f32(*shape):
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


# a toy Caduceus-Ph checkpoint: d_model 8, 1 layer, d_inner 16, d_state 4, dt_rank 1, vocab 16
P = "caduceus.backbone."
M = P + "layers.0.mixer."
ph = [(P + "embeddings.word_embeddings.weight", f32(16, 8))]
for d in ("mamba_fwd", "mamba_rev"):
    ph += [(M + d + ".A_log", np.log(np.tile(np.arange(1, 5, dtype=np.float32), (16, 1)))),
           (M + d + ".D", np.ones(16, np.float32)),
           (M + d + ".conv1d.weight", f32(16, 1, 4)),
           (M + d + ".conv1d.bias", f32(16)),
           (M + d + ".x_proj.weight", f32(9, 16)),
           (M + d + ".dt_proj.weight", f32(16, 1)),
           (M + d + ".dt_proj.bias", f32(16))]
    if d == "mamba_fwd":
        ph += [(M + d + ".in_proj.weight", f32(32, 8)), (M + d + ".out_proj.weight", f32(8, 16))]
ph += [(P + "layers.0.norm.weight", np.ones(8, np.float32)), (P + "norm_f.weight", np.ones(8, np.float32))]
out("safetensors", "caduceus_ph_toy.safetensors", safetensors(ph, {"format": "pt"}))

cmap = np.array([0, 1, 2, 3, 4, 5, 6, 10, 9, 8, 7, 11, 12, 13, 14, 15], np.int64)
ps = [(P + "embeddings.word_embeddings.complement_map", cmap), ("lm_head.complement_map", cmap),
      (P + "embeddings.word_embeddings.embedding.weight", f32(16, 4)), (P + "norm_f.weight", np.ones(4, np.float32))]
out("safetensors", "caduceus_ps_buffers.safetensors",
    safetensors(ps, {"format": "pt", "mamba-dna_command": "mamba-dna pretrain -o out"}))

half = np.array([1.0, -2.5, 65504, 2.0 ** -24, np.inf, -np.inf, np.nan, 0.0], np.float16)
bf = (np.array([1.0, -2.5, 3.0e38, 1e-40], np.float32).view(np.uint32) >> 16).astype(np.uint16)
out("safetensors", "all_dtypes.safetensors", safetensors([
    ("f64", np.array([1.0 / 3, -1e300, 5e-324], np.float64)),
    ("i64", np.array([[-1, 2 ** 62], [0, 7]], np.int64)),
    ("f32", np.arange(6, dtype=np.float32).reshape(1, 2, 3)),
    ("i32", np.array([-7, 0, 2 ** 31 - 1], np.int32)),
    ("half", half), ("bf", "BF16", bf),
    ("u8", np.arange(5, dtype=np.uint8)),
    ("scalar", np.array(2.5, np.float32)),
    ("empty", np.zeros((0, 3), np.float32)),
]))
out("safetensors", "unaligned.safetensors",
    safetensors([("odd", np.arange(3, dtype=np.float16)), ("after", np.arange(4, dtype=np.float32))]))
out("safetensors", "empty_header.safetensors", safetensors([]))
out("safetensors", "metadata_only.safetensors", safetensors([], {"a": "b", "": "\u00e9"}))
out("safetensors", "unpadded_header.safetensors",
    safetensors([("x", np.ones(2, np.float64))], pad=False))

# ---- npy ---------------------------------------------------------------------------------------


def npy(a, version=None, fortran=False):
    f = io.BytesIO()
    if fortran:
        a = np.asfortranarray(a)
    npf.write_array(f, a, version=version, allow_pickle=False)
    return f.getvalue()


out("npy", "embeddings_f32.npy", npy(f32(4, 8)))
out("npy", "embeddings_f16.npy", npy(np.array([[1, -2.5, 65504, np.nan], [2.0 ** -24, np.inf, 0, -0.0]], np.float16)))
out("npy", "scores_f64.npy", npy(np.array([-1.5, 0.25, 1e-300], np.float64)))
out("npy", "tokens_i64.npy", npy(np.arange(24, dtype=np.int64).reshape(2, 3, 4) - 5))
out("npy", "labels_i32.npy", npy(np.array([3, -1, 7], np.int32)))
out("npy", "mask_u8.npy", npy(np.array([[0, 1], [1, 0]], np.uint8)))
out("npy", "scalar.npy", npy(np.float32(2.5)))
out("npy", "empty_rows.npy", npy(np.zeros((0, 4), np.float16)))
out("npy", "v2_f32.npy", npy(f32(2, 3), version=(2, 0)))
out("npy", "v3_i32.npy", npy(np.arange(4, dtype=np.int32), version=(3, 0)))
out("npy", "bigendian.npy", npy(np.arange(3, dtype=">f4")))      # rejected: for coverage
out("npy", "fortran.npy", npy(f32(2, 3), fortran=True))          # rejected: for coverage

# ---- config.json -------------------------------------------------------------------------------

cad_cmap = {str(i): i for i in range(16)}
cad_cmap.update({"7": 10, "8": 9, "9": 8, "10": 7})
ssm = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "dt_min": 0.001, "dt_max": 0.1,
       "dt_init": "random", "dt_scale": 1.0, "dt_init_floor": 1e-4, "conv_bias": True, "bias": False,
       "use_fast_path": True}
init = {"initializer_range": 0.02, "rescale_prenorm_residual": True, "n_residuals_per_layer": 1}


def caduceus(name, d, n, rcps, vocab=16, cmap=None, extra=None):
    c = {"_name_or_path": name, "architectures": ["CaduceusForMaskedLM"],
         "auto_map": {"AutoConfig": "configuration_caduceus.CaduceusConfig",
                      "AutoModelForMaskedLM": "modeling_caduceus.CaduceusForMaskedLM"},
         "bidirectional": True, "bidirectional_strategy": "add", "bidirectional_weight_tie": True,
         "complement_map": cmap or cad_cmap, "d_model": d, "fused_add_norm": True,
         "initializer_cfg": init, "model_type": "caduceus", "n_layer": n, "norm_epsilon": 1e-05,
         "pad_vocab_size_multiple": 8, "rcps": rcps, "residual_in_fp32": False, "rms_norm": True,
         "ssm_cfg": ssm, "torch_dtype": "float32", "transformers_version": "4.38.1", "vocab_size": vocab}
    c.update(extra or {})
    return json.dumps(c, indent=2, sort_keys=True).encode() + b"\n"


out("config", "caduceus_ph_131k.json",
    caduceus("kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16", 256, 16, False))
out("config", "caduceus_ps_131k.json",
    caduceus("kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16", 256, 16, True,
             extra={"residual_in_fp32": True}))
pc_cmap = {str(i): i for i in range(8)}
pc_cmap.update({"3": 6, "4": 5, "5": 4, "6": 3})
out("config", "plantcaduceus_l20.json",
    caduceus("kuleshov-group/PlantCaduceus_l20", 384, 20, True, vocab=8, cmap=pc_cmap,
             extra={"architectures": ["Caduceus"], "pad_token_id": -100, "residual_in_fp32": True}))
out("config", "mamba_130m.json", json.dumps({
    "d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": True,
    "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}).encode())
out("config", "mamba_dna_small.json", json.dumps({
    "architectures": ["MambaLMHeadModel"], "model_type": "mamba", "d_model": 64, "n_layer": 2,
    "vocab_size": 12, "d_intermediate": 0, "tie_embeddings": True, "tokenizer": "caduceus",
    "ssm_cfg": {"layer": "Mamba1", "d_state": 8, "dt_rank": 4}, "max_seq_len": 1024}).encode())
out("config", "minimal.json", b"{}")
