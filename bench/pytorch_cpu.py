#!/usr/bin/python3
"""pytorch_cpu.py: a straightforward PyTorch (CPU) implementation of the Caduceus-Ph forward pass
(model-spec 2.2-2.5: BiMamba "add", weight-tied in/out_proj, fused add + RMSNorm semantics) with a
sequential selective scan over time steps, as in mamba_ssm's selective_scan_ref but without
materialising (d_inner, L, d_state) for the whole length. Random weights, batch 1.
Prints: pytorch <L> <seconds> <bases/s>.
usage: pytorch_cpu.py L [d_model n_layer threads]"""
import math
import sys
import time

import torch
import torch.nn.functional as F

L = int(sys.argv[1])
d = int(sys.argv[2]) if len(sys.argv) > 2 else 256
n_layer = int(sys.argv[3]) if len(sys.argv) > 3 else 16
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 2)
torch.manual_seed(0)
Di, N, R, K = 2 * d, 16, math.ceil(d / 16), 4


def mamba_params():
    return dict(
        conv_w=torch.randn(Di, 1, K) * 0.5, conv_b=torch.randn(Di) * 0.1,
        x_proj=torch.randn(R + 2 * N, Di) / math.sqrt(Di), dt_w=torch.randn(Di, R) / math.sqrt(R),
        dt_b=torch.log(torch.expm1(torch.full((Di,), 0.01))),
        A=-torch.arange(1, N + 1, dtype=torch.float32).repeat(Di, 1), D=torch.ones(Di))


layers = [dict(norm=torch.ones(d), in_proj=torch.randn(2 * Di, d) / math.sqrt(d),
               out_proj=torch.randn(d, Di) / math.sqrt(Di) / math.sqrt(n_layer),
               fwd=mamba_params(), rev=mamba_params()) for _ in range(n_layer)]
E = torch.randn(16, d) * 0.02
norm_f = torch.ones(d)


def rms(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def mamba(u, p, in_proj, out_proj):
    xz = u @ in_proj.T                                     # (L, 2Di)
    x, z = xz[:, :Di], xz[:, Di:]
    x = F.silu(F.conv1d(x.T.unsqueeze(0), p["conv_w"], p["conv_b"], padding=K - 1, groups=Di)[0, :, :u.shape[0]]).T
    xdbl = x @ p["x_proj"].T
    dt = F.softplus(xdbl[:, :R] @ p["dt_w"].T + p["dt_b"])  # (L, Di)
    B, C = xdbl[:, R:R + N], xdbl[:, R + N:]
    h = torch.zeros(Di, N)
    y = torch.empty(u.shape[0], Di)
    for t in range(u.shape[0]):                             # the sequential scan
        h = torch.exp(dt[t, :, None] * p["A"]) * h + (dt[t] * x[t])[:, None] * B[t][None, :]
        y[t] = h @ C[t]
    y = (y + x * p["D"]) * F.silu(z)
    return y @ out_proj.T


@torch.no_grad()
def forward(ids):
    h, res = E[ids], None
    for lay in layers:
        res = h if res is None else h + res
        u = rms(res, lay["norm"])
        h = mamba(u, lay["fwd"], lay["in_proj"], lay["out_proj"]) + \
            mamba(u.flip(0), lay["rev"], lay["in_proj"], lay["out_proj"]).flip(0)
    return rms(h + res, norm_f)


ids = torch.randint(7, 11, (L,))
t = time.time()
out = forward(ids)
t = time.time() - t
assert torch.isfinite(out).all()
print(f"pytorch\t{L}\t{t:.3f}\t{L / t:.0f}")
