#!/usr/bin/env python3
"""Independent references for sqz's GPTQ and calibration Grams.

  gptq_reference.py check DIR
      DIR is written by `test_gptq --emit DIR`: W, H, and for each case the block scales
      sqz chose, its integer levels and its Ŵ. This recomputes the GPTQ sweep from the
      paper (Frantar et al. 2022, Algorithm 1, without lazy batching) in float64 numpy
      with those scales held fixed: dampen H, zero dead columns, upper Cholesky factor U
      of H⁻¹, then per column (in act-order: by decreasing diag H) round to the nearest
      grid value and subtract err·U[i, i:] from the remaining columns. It checks that the
      levels agree with sqz's on >= 99.9% of the entries and that the H-weighted output
      error agrees within 1e-4 relative.

  gptq_reference.py grams MODEL_DIR WINDOWS OUT
      Transformers' LlamaForCausalLM with forward hooks on q_proj, o_proj, gate_proj,
      down_proj accumulates the four input Gram matrices per layer in float64 over the
      token windows of WINDOWS (text: one window per line, token ids separated by
      spaces). OUT gets, as float32 little-endian, for the layers listed in the header
      line, attn_in, attn_o_in, ffn_in, ffn_down_in (each divided by the token count).
      Run by hand (torch is not on CI); the output is the fixture tests/fixtures/calib/.
"""
import os
import sys

import numpy as np

# ggml's non-linear 4-bit grid (ggml-common.h kvalues_iq4nl)
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                         dtype=np.float32)


def reference_sweep(W, H, tname, act, block, sub, lmin, lmax, percdamp, params):
    rows, cols = W.shape
    W = W.astype(np.float64).copy()
    H = H.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    damp = percdamp * np.mean(np.diag(H))
    H[np.diag_indices(cols)] += damp
    perm = np.arange(cols)
    if act:
        perm = np.argsort(-np.diag(H), kind="stable")
    Hp = H[np.ix_(perm, perm)]
    Wp = W[:, perm]
    Hinv = np.linalg.inv(Hp)
    U = np.linalg.cholesky(Hinv).T  # upper: Hinv = Uᵀ U
    n_sub = block // sub
    nblk = cols // block
    P = params.reshape(rows, nblk, n_sub, 2)
    levels = np.zeros((rows, cols), dtype=np.int16)
    Q = np.zeros((rows, cols), dtype=np.float64)
    for i in range(cols):
        o = perm[i]
        b, j = o // block, (o % block) // sub
        x = Wp[:, i]
        lv = np.arange(lmin, lmax + 1)
        sc = P[:, b, j, 0].astype(np.float32)[:, None]
        mn = P[:, b, j, 1].astype(np.float32)[:, None]
        if tname == "IQ4_NL":
            vals = sc * KVALUES_IQ4NL[lv][None, :]
        else:
            vals = sc * lv.astype(np.float32)[None, :] - mn  # float32, as ggml computes
        k = np.argmin(np.abs(vals.astype(np.float64) - x[:, None]), axis=1)
        levels[:, o] = lv[k]
        q = vals[np.arange(rows), k].astype(np.float64)
        Q[:, o] = q
        err = (x - q) / U[i, i]
        Wp[:, i:] -= np.outer(err, U[i, i:])
    return levels, Q


def output_error(W, Q, H):
    D = W.astype(np.float64) - Q
    Wd = W.astype(np.float64)
    return np.einsum("ij,jk,ik->", D, H, D) / np.einsum("ij,jk,ik->", Wd, H, Wd)


def check(d):
    lines = [ln.split() for ln in open(os.path.join(d, "cases.txt")) if ln.strip()]
    ok = True
    W = H = None
    for f in lines:
        base, tname, act, rows, cols, block, sub, lmin, lmax = f[0], f[1], int(f[2]), *map(int, f[3:9])
        percdamp, c_err = float(f[9]), float(f[10])
        if W is None:
            W = np.fromfile(os.path.join(d, "W.f32"), dtype="<f4").reshape(rows, cols)
            H = np.fromfile(os.path.join(d, "H.f64"), dtype="<f8").reshape(cols, cols)
        params = np.fromfile(os.path.join(d, base + ".params.f32"), dtype="<f4")
        clev = np.fromfile(os.path.join(d, base + ".levels.i8"), dtype=np.int8).reshape(rows, cols)
        cq = np.fromfile(os.path.join(d, base + ".what.f32"), dtype="<f4").reshape(rows, cols)
        levels, Q = reference_sweep(W, H, tname, act, block, sub, lmin, lmax, percdamp, params)
        agree = float(np.mean(levels == clev))
        r_err = output_error(W, Q, H)
        c_err2 = output_error(W, cq.astype(np.float64), H)
        rel = abs(r_err - c_err2) / r_err
        good = agree >= 0.999 and rel <= 1e-4 and abs(c_err2 - c_err) <= 1e-6 * c_err
        ok &= good
        print(f"{base:12s} levels agree {agree * 100:8.4f}%  out err ref {r_err:.6e} sqz {c_err2:.6e} "
              f"(rel diff {rel:.2e}, sqz reported {c_err:.6e})  {'OK' if good else 'FAIL'}")
    return ok


def grams(model_dir, windows_path, out_path):
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.eval()
    wins = [[int(t) for t in ln.split()] for ln in open(windows_path) if ln.strip()]
    L = model.config.num_hidden_layers
    sites = ["q_proj", "o_proj", "gate_proj", "down_proj"]
    acc = {}
    count = {}
    hooks = []

    def make_hook(key):
        def hook(mod, inp):
            x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double()
            acc[key] = acc.get(key, 0) + x.T @ x
            count[key] = count.get(key, 0) + x.shape[0]
        return hook

    for li, layer in enumerate(model.model.layers):
        mods = [layer.self_attn.q_proj, layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.down_proj]
        for s, m in zip(sites, mods):
            hooks.append(m.register_forward_pre_hook(make_hook((li, s))))
    with torch.no_grad():
        for w in wins:
            model(torch.tensor([w]))
    layers = [0, L - 1] if L > 1 else [0]
    with open(out_path, "wb") as f:
        f.write(f"sqzgram {len(wins)} {len(wins[0])} {len(layers)} {' '.join(map(str, layers))}\n".encode())
        for li in layers:
            for s in sites:
                g = (acc[(li, s)] / count[(li, s)]).float().numpy()
                f.write(np.ascontiguousarray(g, dtype="<f4").tobytes())
    print(f"wrote {out_path}: layers {layers}, {len(wins)} windows of {len(wins[0])} tokens")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        sys.exit(0 if check(sys.argv[2]) else 1)
    if len(sys.argv) == 5 and sys.argv[1] == "grams":
        grams(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0)
    print(__doc__)
    sys.exit(2)
