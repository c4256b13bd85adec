#!/usr/bin/env python3
"""merge_embed.py: the gather step of a scattered `mamba-dna embed`. Concatenates the rows of
chunk .npy files (same dtype and row shape, C order) into one .npy, the chunks' .npy.bed sidecars
into one (column 7, the first row of each block, shifted by the rows before the chunk), and their
.npy.json provenance into one (keys equal in every chunk kept at the top, the rest per chunk).
The result has the layout of a single `mamba-dna embed -r R1 -r R2 ...` run over the same regions.
Plain Python (no numpy); rows are copied in 16 MiB blocks. Outputs are written under temporary
names and renamed when all three are complete.

usage: merge_embed.py -o OUT.npy CHUNK1.npy [CHUNK2.npy ...]
"""

import argparse
import ast
import json
import os
import struct
import sys

MAGIC = b"\x93NUMPY"
BLOCK = 16 << 20


def die(msg):
    sys.exit(f"[E::merge_embed] {msg}")


def read_header(path):
    """(header dict, data offset) of an .npy file."""
    with open(path, "rb") as fh:
        pre = fh.read(10)
        if len(pre) < 10 or pre[:6] != MAGIC:
            die(f"{path}: not an .npy file")
        major = pre[6]
        if major == 1:
            hlen, off = struct.unpack("<H", pre[8:10])[0], 10
        elif major in (2, 3):
            fh.seek(8)
            hlen, off = struct.unpack("<I", fh.read(4))[0], 12
        else:
            die(f"{path}: .npy version {major} not supported")
        fh.seek(off)
        text = fh.read(hlen).decode("latin1")
    try:
        hdr = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        die(f"{path}: malformed .npy header")
    if not isinstance(hdr, dict) or {"descr", "fortran_order", "shape"} - set(hdr):
        die(f"{path}: malformed .npy header")
    if hdr["fortran_order"] and len(hdr["shape"]) > 1:
        die(f"{path}: Fortran-order arrays are not supported")
    if len(hdr["shape"]) < 1:
        die(f"{path}: a 0-d array has no rows")
    return hdr, off + hlen


def header_bytes(descr, shape):
    d = "{'descr': %r, 'fortran_order': False, 'shape': %s, }" % (descr, repr(tuple(shape)))
    for major, lenfmt in ((1, "<H"), (2, "<I")):
        pre = len(MAGIC) + 2 + struct.calcsize(lenfmt)
        total = pre + len(d) + 1
        pad = (64 - total % 64) % 64
        body = d + " " * pad + "\n"
        if major == 2 or len(body) < 65536:
            return MAGIC + bytes([major, 0]) + struct.pack(lenfmt, len(body)) + body.encode("latin1")


def itemsize(descr):
    try:
        return int(descr[2:]) if descr[0] in "<>|=" else int(descr[1:])
    except ValueError:
        die(f"dtype '{descr}' not supported")


def read_bed(path, nrows):
    """The sidecar's lines as field lists; checks that the row blocks lie inside the array."""
    lines = []
    with open(path) as fh:
        for ln, line in enumerate(fh, 1):
            if not line.strip() or line.startswith("#"):
                continue
            f = line.rstrip("\n").split("\t")
            if len(f) < 8:
                die(f"{path}:{ln}: expected 8 columns, found {len(f)}")
            first, n = int(f[6]), int(f[7])
            if first < 0 or n < 0 or first + n > nrows:
                die(f"{path}:{ln}: rows {first}+{n} outside the array's {nrows} rows")
            lines.append(f)
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True, help="merged OUT.npy (+ .bed, .json)")
    ap.add_argument("chunks", nargs="+", help="chunk .npy files, in order")
    a = ap.parse_args()
    if not a.output.endswith(".npy"):
        die(f"{a.output}: the output must end in .npy")

    heads = []
    for c in a.chunks:
        hdr, off = read_header(c)
        heads.append((c, hdr, off))
    descr, row_shape = heads[0][1]["descr"], tuple(heads[0][1]["shape"][1:])
    for c, hdr, _ in heads:
        if hdr["descr"] != descr or tuple(hdr["shape"][1:]) != row_shape:
            die(f"{c}: dtype {hdr['descr']} rows {tuple(hdr['shape'][1:])} differ from "
                f"{heads[0][0]}: {descr} {row_shape}")
    row_bytes = itemsize(descr)
    for n in row_shape:
        row_bytes *= n
    nrows = sum(hdr["shape"][0] for _, hdr, _ in heads)

    d = os.path.dirname(os.path.abspath(a.output))
    tmp = {ext: os.path.join(d, f".{os.path.basename(a.output)}{ext}.tmp{os.getpid()}")
           for ext in ("", ".bed", ".json")}
    try:
        bed_out, provs, offset = [], [], 0
        with open(tmp[""], "wb") as out:
            out.write(header_bytes(descr, (nrows,) + row_shape))
            for c, hdr, off in heads:
                n = hdr["shape"][0]
                want = n * row_bytes
                if os.path.getsize(c) != off + want:
                    die(f"{c}: {os.path.getsize(c) - off} data bytes, expected {want} (truncated?)")
                with open(c, "rb") as fh:
                    fh.seek(off)
                    left = want
                    while left:
                        buf = fh.read(min(BLOCK, left))
                        if not buf:
                            die(f"{c}: truncated")
                        out.write(buf)
                        left -= len(buf)
                for f in read_bed(c + ".bed", n):
                    f[6] = str(int(f[6]) + offset)
                    bed_out.append("\t".join(f))
                try:
                    with open(c + ".json") as fh:
                        provs.append(json.load(fh))
                except FileNotFoundError:
                    provs.append({})
                except json.JSONDecodeError as e:
                    die(f"{c}.json: {e}")
                offset += n
        with open(tmp[".bed"], "w") as fh:
            fh.write("".join(line + "\n" for line in bed_out))
        common = {k: v for k, v in provs[0].items() if all(k in p and p[k] == v for p in provs)}
        merged = dict(common)
        merged["gathered_by"] = "workflows/snakemake/scripts/merge_embed.py"
        merged["rows"] = nrows
        merged["chunks"] = [
            dict({"npy": c, "rows": hdr["shape"][0]},
                 **{k: v for k, v in p.items() if k not in common})
            for (c, hdr, _), p in zip(heads, provs)
        ]
        with open(tmp[".json"], "w") as fh:
            json.dump(merged, fh, indent=1)
            fh.write("\n")
        for ext in (".bed", ".json", ""):
            os.replace(tmp[ext], a.output + ext)
    finally:
        for p in tmp.values():
            if os.path.exists(p):
                os.unlink(p)
    print(f"[M::merge_embed] {len(heads)} chunks, {nrows} rows -> {a.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
