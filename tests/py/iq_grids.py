#!/usr/bin/env python3
"""The lattice/codebook tables of ggml's i-quants as C data, from gguf-py's own tables.

usage: iq_grids.py write src/format/iq_grids.c     (made once; the file is committed)
       iq_grids.py check src/format/iq_grids.c     (tests/t_quant_gguf_py.sh: exit 1 when
                                                    the file differs from gguf-py's tables)

The grids are part of the formats' definition (ggml-common.h; gguf-py carries the same
points): IQ2_XXS 256 × 8 values from {8, 25, 43}, IQ2_XS 512 × 8 and IQ2_S 1024 × 8 from
the same set, IQ3_XXS 256 × 4 from {4, 12, ..., 62}, IQ3_S 512 × 4 from {1, 3, ..., 15},
IQ1_S/IQ1_M 2048 × 8 from {-1, 0, 1}; and ksigns, the 128 sign patterns of 7 bits with
an 8th making the count of minus signs even. Derived from them for the IQ3_S, IQ3_XXS, IQ2
and IQ1 quantizers: each cell of the level-index tuples (8⁴ or 3⁸) with its nearest grid
points. Each
point is written as ggml writes it:
one byte per value, the first value in the lowest byte (int8 two's complement for IQ1).
"""
import sys

import numpy as np
from gguf import quants as q

HEADER = """\
/* The grids of ggml's i-quants (the formats' definition; points as ggml-common.h stores
 * them: value j of a point in byte j, little-endian), declared in iq_grids.h. Generated
 * from gguf-py's tables by tests/py/iq_grids.py, which also checks this file against
 * them. Do not edit. */
#include "iq_grids.h"
"""


def grid_values(cls):
    cls.init_grid()
    g = np.asarray(cls.grid, dtype=np.float32).reshape(cls.grid_shape)
    return g.astype(np.int64)


def table(name, ctype, values, per_line):
    n, k = values.shape
    words = []
    for row in values:
        w = 0
        for j, v in enumerate(row):
            w |= (int(v) & 0xFF) << (8 * j)
        words.append(w)
    width = 2 * k
    lines = [f"const {ctype} {name}[{n}] = {{"]
    for i in range(0, n, per_line):
        chunk = ", ".join(f"0x{w:0{width}x}" for w in words[i:i + per_line])
        lines.append(f"    {chunk},")
    lines.append("};")
    return "\n".join(lines) + "\n"


def neighbours(qtype, name, v0, dv, levels=8, slack=1):
    """For the codebook quantizers: each cell of level indices (level k of grid value v =
    round((v - v0) / dv): IQ3_S's {1, 3, ..., 15} and IQ3_XXS's {4, 12, ..., 52, 62} each
    give 0..7, 8⁴ cells of 4 values; IQ2_XXS's {8, 25, 43} and IQ1_S's {-1, 0, 1} 0..2, 3⁸
    cells of 8 values; cell
    Σ k_j · levels^j) lists the grid points within squared index distance dmin² + slack of
    it (dmin: the nearest point's; slack 1, or 0 for IQ1_S, whose 2048 points of 3⁸ would
    otherwise list 84,416, past the offsets' uint16), nearest first (ties by index); a cell
    that is a grid point lists only itself."""
    g = grid_values(qtype)
    k = np.floor((g - v0) / dv + 0.5).astype(int)
    n, G = g.shape
    ncell = levels ** G
    cells = np.array([[c // levels ** j % levels for j in range(G)] for c in range(ncell)])
    d2 = ((cells[:, None, :] - k[None, :, :]) ** 2).sum(-1)
    start, items = [0], []
    for c in range(ncell):
        m = d2[c].min()
        near = [i for i in range(n) if d2[c, i] <= (m if m == 0 else m + slack)]
        near.sort(key=lambda i: (d2[c, i], i))
        items += near
        start.append(len(items))
    lines = [f"/* {name.upper()}: cell c's grid points are sqz_{name}_near[sqz_{name}_cell[c] .. sqz_{name}_cell[c + 1]) (neighbours) */",
             f"const uint16_t sqz_{name}_cell[{ncell + 1}] = {{"]
    for i in range(0, ncell + 1, 16):
        lines.append("    " + ", ".join(str(v) for v in start[i:i + 16]) + ",")
    lines.append("};")
    lines.append(f"const uint16_t sqz_{name}_near[{len(items)}] = {{")
    for i in range(0, len(items), 16):
        lines.append("    " + ", ".join(str(v) for v in items[i:i + 16]) + ",")
    lines.append("};")
    return "\n".join(lines) + "\n"


def render():
    ks = np.frombuffer(q.IQ2_XXS.ksigns, dtype=np.uint8)
    out = [HEADER]
    out.append("/* ksigns[i]: bits 0..6 = i, bit 7 set when i has an odd number of bits */")
    out.append("const uint8_t sqz_iq_signs[128] = {")
    for i in range(0, 128, 16):
        out.append("    " + ", ".join(f"0x{v:02x}" for v in ks[i:i + 16]) + ",")
    out.append("};\n")
    out.append(table("sqz_iq2xxs_grid", "uint64_t", grid_values(q.IQ2_XXS), 4))
    out.append(table("sqz_iq2xs_grid", "uint64_t", grid_values(q.IQ2_XS), 4))
    out.append(table("sqz_iq2s_grid", "uint64_t", grid_values(q.IQ2_S), 4))
    out.append(table("sqz_iq3xxs_grid", "uint32_t", grid_values(q.IQ3_XXS), 8))
    out.append(table("sqz_iq3s_grid", "uint32_t", grid_values(q.IQ3_S), 8))
    out.append(table("sqz_iq1s_grid", "uint64_t", grid_values(q.IQ1_S), 4))
    out.append(neighbours(q.IQ3_S, "iq3s", 1, 2))
    out.append(neighbours(q.IQ3_XXS, "iq3xxs", 4, 8))
    out.append(neighbours(q.IQ2_XXS, "iq2xxs", 8, 17.5, levels=3))
    out.append(neighbours(q.IQ2_XS, "iq2xs", 8, 17.5, levels=3))
    out.append(neighbours(q.IQ2_S, "iq2s", 8, 17.5, levels=3))
    out.append(neighbours(q.IQ1_S, "iq1s", -1, 1, levels=3, slack=0))
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    text = render()
    path = sys.argv[2]
    if sys.argv[1] == "write":
        with open(path, "w") as f:
            f.write(text)
        print(f"iq_grids: wrote {path}")
        return 0
    with open(path) as f:
        have = f.read()
    if have != text:
        a, b = have.splitlines(), text.splitlines()
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                print(f"iq_grids: FAIL: {path} line {i + 1} differs from gguf-py's tables:\n  {x}\n  {y}")
                break
        else:
            print(f"iq_grids: FAIL: {path} has {len(a)} lines, gguf-py's tables give {len(b)}")
        return 1
    print(f"iq_grids: {path} equals gguf-py's tables (ksigns, IQ2_XXS/XS/S, IQ3_XXS/S, IQ1_S grids; IQ3_S, IQ3_XXS, IQ2_XXS, IQ2_XS, IQ2_S and IQ1_S cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
