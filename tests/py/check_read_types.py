#!/usr/bin/env python3
"""sqz's dequantizers of the types it reads but does not write, against gguf-py's.

usage: check_read_types.py READ.gguf

READ.gguf comes from `test_types --emit-read`: for each such type T (IQ2_XXS, IQ2_XS,
IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, TQ1_0, TQ2_0) random blocks raw.T (every bit random
but the f16 scale, a finite value) and sqz's dequantization deq.T (F32). gguf-py's
dequantize of raw.T must equal deq.T bit for bit. Exit status 0 when every type agrees.
"""
import sys

import numpy as np
from gguf import GGUFReader, quants

WANT = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0"]


def main():
    r = GGUFReader(sys.argv[1])
    t = {x.name: x for x in r.tensors}
    bad = 0
    for name in WANT:
        raw, deq = t.get("raw." + name), t.get("deq." + name)
        if raw is None or deq is None:
            print(f"check_read_types: FAIL: {name} missing from {sys.argv[1]}")
            bad += 1
            continue
        ref = quants.dequantize(np.asarray(raw.data), raw.tensor_type).reshape(-1).astype(np.float32)
        got = np.asarray(deq.data, dtype=np.float32).reshape(-1)
        same = ref.shape == got.shape and np.array_equal(ref.view(np.uint32), got.view(np.uint32))
        nd = int(np.sum(ref.view(np.uint32) != got.view(np.uint32))) if ref.shape == got.shape else -1
        print(f"check_read_types: {name:8s} {got.size} values: {'bit-exact' if same else f'{nd} differ'}"
              + ("" if same else f" (first: sqz {got[np.argmax(ref != got)]!r}, gguf-py {ref[np.argmax(ref != got)]!r})"))
        bad += not same
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
