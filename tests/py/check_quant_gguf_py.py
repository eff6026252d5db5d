#!/usr/bin/env python3
"""Checks sqz's quantizers and GGUF writer against gguf-py and llama.cpp's ggml.

usage: [SQZ_GGML_LIB=.../libggml-base.so] check_quant_gguf_py.py QUANT.gguf SPEC.gguf

llama.cpp's reference is its libggml-base.so, loaded through ctypes from $SQZ_GGML_LIB
(tests/t_quant_gguf_py.sh sets it from `scripts/build_llamacpp.sh --ggml-lib`). Without a
library that loads the check FAILS; only with SQZ_NO_LLAMACPP=1 and no SQZ_GGML_LIB does it
run the gguf-py checks alone, saying which llama.cpp comparisons it skipped.

QUANT.gguf is written by `test_quantize --emit`: source rows (src.gauss, src.student: 16 x
1024 f32, the second Student-t(3), heavy-tailed; src.edge: edge values and random bit
patterns for the float conversions), per-column importances (weights), and for each
type T sqz writes and each case sqz's tensor q.T.case and sqz's own dequantization
deq.T.case. The quantized types (every type in the type table with `quantize` set) have
the cases gauss, student and tw (student weighted by `weights`); the float conversions
F16 and BF16 have gauss, student and edge. The types are read from the file; each type
of REQUIRED must be there.

1. Byte-exact: gguf-py's dequantizer applied to sqz's bytes must give exactly sqz's floats
   (bit for bit, NaNs included).
2. Quality: RMSE (weighted RMSE for tw) of sqz vs gguf-py's own quantizer (the types it
   has: Q8_0, Q5_1, Q5_0, Q4_1, Q4_0) and vs llama.cpp's ggml_quantize_chunk (all types;
   with the weights as its imatrix for tw). sqz must be at or below gguf-py, and at or
   below llama.cpp. A table of bits/weight and RMSE is printed.
   The float conversions must instead give exactly gguf-py's bytes (numpy's float16
   cast; gguf-py's BF16, ggml's round to nearest even) and llama.cpp's (edge included,
   except llama.cpp's F16 of NaN, whose payload depends on the CPU's converter).
3. Writer: SPEC.gguf (`test_gguf_write --emit`) read by GGUFReader must hold exactly the
   specification below (keys, types, values, tensor names, types, shapes, offsets, data).
4. llama.cpp's own GGUF parser (gguf_init_from_file) must read both files and see the
   same keys count, tensors, types and offsets.
With the library, every quantized type x case and every float conversion x case must have
been compared with llama.cpp (the counts are printed and checked), and ggml's name for
each type id must be the gguf-py name (the two enumerations agree).
Exit status 0 when everything holds, 1 otherwise.
"""
import ctypes
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT, GGUFReader, GGUFValueType as VT

# what the file must hold at least: the quantized types and the float conversions
REQUIRED = ["Q8_0", "Q6_K", "Q5_1", "Q5_0", "Q5_K", "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS", "Q4_K", "Q3_K", "Q2_K", "F16", "BF16"]
FLOAT_TYPES = {"F32", "F16", "BF16"}
QCASES = ["gauss", "student", "tw"]
FCASES = ["gauss", "student", "edge"]
failures = []
ll_runs = {"quant": 0, "float": 0, "parser": 0}  # comparisons with llama.cpp actually made
ll_want = {"quant": 0, "float": 0, "parser": 2}


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def tensor_map(reader):
    return {t.name: t for t in reader.tensors}


def f32_rows(t):
    """An F32 tensor as (rows, cols) numpy; gguf-py lists shapes in ggml order."""
    ne = [int(x) for x in t.shape]
    return np.asarray(t.data, dtype=np.float32).reshape(list(reversed(ne)) if len(ne) > 1 else ne)


def load_ggml():
    """llama.cpp's libggml-base from $SQZ_GGML_LIB: (lib, path). (None, None) after a
    failure when it is unset or does not load; (None, None) without a failure only when
    it is unset and SQZ_NO_LLAMACPP=1."""
    path = os.environ.get("SQZ_GGML_LIB", "")
    if not path:
        if os.environ.get("SQZ_NO_LLAMACPP", "0") == "1":
            print("llama.cpp reference: SQZ_NO_LLAMACPP=1 and no SQZ_GGML_LIB: SKIPPED the llama.cpp comparisons "
                  "(RMSE vs ggml_quantize_chunk for every quantized type, the weighted/imatrix case, "
                  "F16/BF16 bytes, gguf_init_from_file on both files); gguf-py only")
        else:
            fail("no llama.cpp library: SQZ_GGML_LIB is not set (tests/t_quant_gguf_py.sh sets it from "
                 "scripts/build_llamacpp.sh --ggml-lib; run scripts/build_llamacpp.sh, or SQZ_NO_LLAMACPP=1 "
                 "to skip the llama.cpp comparisons)")
        return None, None
    try:
        lib = ctypes.CDLL(path)
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        lib.ggml_type_name.restype = ctypes.c_char_p
        lib.ggml_type_name.argtypes = [ctypes.c_int]
        lib.gguf_init_from_file  # the parser must be there too
    except (OSError, AttributeError) as e:
        fail(f"SQZ_GGML_LIB={path} does not load as llama.cpp's ggml-base: {e}")
        return None, None
    return lib, path


def ggml_quantize(lib, qt, x, imatrix):
    rows, cols = x.shape
    bs, bb = gguf.GGML_QUANT_SIZES[qt]
    out = np.zeros(rows * (cols // bs) * bb, dtype=np.uint8)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if imatrix is None and lib.ggml_quantize_requires_imatrix(int(qt)):
        # ggml refuses these types without importances (IQ2_XXS): uniform ones, as sqz's
        # own writer takes no weights as uniform
        imatrix = np.ones(cols, dtype=np.float32)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    n = lib.ggml_quantize_chunk(int(qt), x.ctypes.data, out.ctypes.data, 0, rows, cols,
                                None if im is None else im.ctypes.data)
    if n != out.size:
        fail(f"{qt.name}: ggml_quantize_chunk wrote {n} bytes, gguf-py's size is {out.size}")
        return None
    return gguf.quants.dequantize(out.reshape(rows, -1), qt).reshape(rows, cols)


def wrmse(x, y, w):
    d2 = (x.astype(np.float64) - y.astype(np.float64)) ** 2
    if w is None:
        return float(np.sqrt(d2.mean()))
    ww = np.broadcast_to(w.astype(np.float64), x.shape)
    return float(np.sqrt((d2 * ww).sum() / ww.sum()))


def ggml_convert(lib, qt, x):
    """llama.cpp's bytes for a float type (ggml_quantize_chunk converts F16/BF16 rows)."""
    rows, cols = x.shape
    bs, bb = gguf.GGML_QUANT_SIZES[qt]
    out = np.zeros(rows * cols * bb, dtype=np.uint8)
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = lib.ggml_quantize_chunk(int(qt), x.ctypes.data, out.ctypes.data, 0, rows, cols, None)
    if n != out.size:
        fail(f"{qt.name}: ggml_quantize_chunk wrote {n} bytes, expected {out.size}")
        return None
    return out.reshape(rows, -1)


def file_types(tm):
    """The types of the q.T.case tensors, in decreasing bits per weight."""
    names = {n.split(".")[1] for n in tm if n.startswith("q.")}
    for req in REQUIRED:
        if req not in names:
            fail(f"{req}: no q.{req}.* tensors in the file")
    known = [n for n in names if n in QT.__members__]
    for n in sorted(names - set(known)):
        fail(f"{n}: not a ggml type known to gguf-py")
    return sorted(known, key=lambda n: (-gguf.GGML_QUANT_SIZES[QT[n]][1] * 8 / gguf.GGML_QUANT_SIZES[QT[n]][0], n))


def check_float(tname, case, x, qbytes, ours, lib):
    """F16/BF16: sqz's bytes must be gguf-py's (and llama.cpp's) exactly."""
    qt = QT[tname]
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.asarray(gguf.quants.quantize(x, qt)).view(np.uint8).reshape(qbytes.shape)
    same_py = bool(np.array_equal(want, qbytes))
    if not same_py:
        bad = int((want.view(np.uint16) != qbytes.view(np.uint16)).sum())
        fail(f"{tname}.{case}: {bad} values converted differently from gguf-py")
    same_ll = None
    if lib is not None and (llb := ggml_convert(lib, qt, x)) is not None:
        ll_runs["float"] += 1
        ll = llb.view(np.uint16)
        mine = qbytes.view(np.uint16)
        diff = ll != mine
        if tname == "F16":  # NaN payloads depend on the converter (F16C keeps them)
            diff &= ~np.isnan(x)
        same_ll = not bool(diff.any())
        if not same_ll:
            fail(f"{tname}.{case}: {int(diff.sum())} values converted differently from llama.cpp")
    return same_py, same_ll


def check_quant(path, lib, libpath):
    r = GGUFReader(path)
    tm = tensor_map(r)
    src = {k: f32_rows(tm[f"src.{k}"]) for k in ("gauss", "student", "edge") if f"src.{k}" in tm}
    if len(src) != 3:
        fail(f"source tensors: only {sorted(src)} in {path} (an old test_quantize?)")
        return
    src["tw"] = src["student"]
    w = np.asarray(tm["weights"].data, dtype=np.float32)
    if lib is not None:
        print(f"llama.cpp reference: {libpath}")
    hdr = f"{'type':7} {'bpw':>5}  {'case':8} {'exact':>5}  {'sqz rmse':>10} {'gguf-py':>10} {'llama.cpp':>10}  {'sqz/llama':>9}"
    print(hdr)
    print("-" * len(hdr))
    for tname in file_types(tm):
        qt = QT[tname]
        bs, bb = gguf.GGML_QUANT_SIZES[qt]
        bpw = bb * 8 / bs
        if lib is not None:
            ll_name = (lib.ggml_type_name(int(qt)) or b"").decode()
            if ll_name.upper() != tname:
                fail(f"{tname}: type id {int(qt)} is '{ll_name}' in llama.cpp's ggml (enumerations differ)")
        cases = FCASES if tname in FLOAT_TYPES else QCASES
        ll_want["float" if tname in FLOAT_TYPES else "quant"] += len(cases)
        for case in cases:
            x = src[case]
            wc = w if case == "tw" else None
            qten = tm.get(f"q.{tname}.{case}")
            dten = tm.get(f"deq.{tname}.{case}")
            if qten is None or dten is None:
                fail(f"{tname}.{case}: tensors missing")
                continue
            if qten.tensor_type != qt:
                fail(f"{tname}.{case}: tensor type {qten.tensor_type!r}, expected {qt!r}")
                continue
            rows, cols = x.shape
            qbytes = np.ascontiguousarray(qten.data).view(np.uint8).reshape(rows, -1)  # F16 data comes as float16
            if qbytes.shape[1] != cols // bs * bb:
                fail(f"{tname}.{case}: {qbytes.shape[1]} bytes per row, expected {cols // bs * bb}")
                continue
            ref = gguf.quants.dequantize(qbytes, qt).reshape(rows, cols).astype(np.float32)
            ours = f32_rows(dten)
            exact = bool(np.array_equal(ref.view(np.uint32), ours.view(np.uint32)))  # bits: NaNs too
            if not exact:
                bad = int((ref.view(np.uint32) != ours.view(np.uint32)).sum())
                fail(f"{tname}.{case}: gguf-py's dequantization differs from sqz's in {bad} of {ref.size} values")
            if tname in FLOAT_TYPES:
                same_py, same_ll = check_float(tname, case, x, qbytes, ours, lib)
                yn = lambda v: f"{'-':>10}" if v is None else f"{'same' if v else 'DIFFERENT':>10}"
                e = f"{wrmse(x, ref, None):10.6f}" if case != "edge" else f"{'-':>10}"
                print(f"{tname:7} {bpw:5.2f}  {case:8} {'yes' if exact else 'NO':>5}  {e} {yn(same_py)} {yn(same_ll)}"
                      f"  {'bytes':>9}")
                continue
            e_sqz = wrmse(x, ref, wc)
            e_py = e_ll = None
            try:
                if case != "tw":  # gguf-py's quantizers take no importance weights
                    qp = gguf.quants.quantize(x, qt)
                    e_py = wrmse(x, gguf.quants.dequantize(qp, qt).reshape(rows, cols), None)
            except (NotImplementedError, gguf.quants.QuantError):
                pass
            if lib is not None:
                yl = ggml_quantize(lib, qt, x, w if case == "tw" else None)
                if yl is not None:
                    e_ll = wrmse(x, yl, wc)
                    ll_runs["quant"] += 1
            fmt = lambda v: f"{v:10.6f}" if v is not None else f"{'-':>10}"
            ratio = f"{e_sqz / e_ll:9.3f}" if e_ll else f"{'-':>9}"
            print(f"{tname:7} {bpw:5.2f}  {case:8} {'yes' if exact else 'NO':>5}  {e_sqz:10.6f} {fmt(e_py)} {fmt(e_ll)}  {ratio}")
            if e_py is not None and e_sqz > e_py:
                fail(f"{tname}.{case}: sqz rmse {e_sqz:.6g} above gguf-py's {e_py:.6g}")
            if e_ll is not None and e_sqz > e_ll:
                fail(f"{tname}.{case}: sqz rmse {e_sqz:.6g} above llama.cpp's {e_ll:.6g}")


# ---- the writer's specification (the same as tests/test_gguf_write.c) ----
SPEC_KV = [
    ("general.architecture", VT.STRING, "sqztest"),
    ("general.alignment", VT.UINT32, 64),
    ("t.u8", VT.UINT8, 200), ("t.i8", VT.INT8, -100), ("t.u16", VT.UINT16, 60000),
    ("t.i16", VT.INT16, -30000), ("t.u32", VT.UINT32, 4000000000), ("t.i32", VT.INT32, -2000000000),
    ("t.u64", VT.UINT64, 18000000000000000000), ("t.i64", VT.INT64, -9000000000000000000),
    ("t.f32", VT.FLOAT32, 3.25), ("t.f64", VT.FLOAT64, -1.0e-300),
    ("t.bool_t", VT.BOOL, True), ("t.bool_f", VT.BOOL, False),
    ("t.str", VT.STRING, "h\u00e9llo w\u00f6rld \u2713"), ("t.empty_str", VT.STRING, ""),
    ("t.arr_u8", (VT.ARRAY, VT.UINT8), [1, 2, 255]), ("t.arr_i8", (VT.ARRAY, VT.INT8), [-128, 0, 127]),
    ("t.arr_u16", (VT.ARRAY, VT.UINT16), [0, 65535]), ("t.arr_i16", (VT.ARRAY, VT.INT16), [-32768, 32767]),
    ("t.arr_u32", (VT.ARRAY, VT.UINT32), [0, 4294967295]), ("t.arr_i32", (VT.ARRAY, VT.INT32), [-2**31, 5]),
    ("t.arr_u64", (VT.ARRAY, VT.UINT64), [0, 2**64 - 1]), ("t.arr_i64", (VT.ARRAY, VT.INT64), [-2**63, 2**63 - 1]),
    ("t.arr_f32", (VT.ARRAY, VT.FLOAT32), [0.5, -1.5, float(np.float32(1e30))]),
    ("t.arr_f64", (VT.ARRAY, VT.FLOAT64), [0.1, -2.5e-300]),
    ("t.arr_bool", (VT.ARRAY, VT.BOOL), [True, False, True]),
    ("t.arr_str", (VT.ARRAY, VT.STRING), ["a", "", "\u00fcn\u00ef", "tokenizer ggml"]),
    ("t.arr_empty", (VT.ARRAY, VT.INT32), []),
]
SPEC_TENSORS = [  # name, type, ne (ggml order)
    ("a.f32", QT.F32, [7]),
    ("b.f16", QT.F16, [8, 3]),
    ("c.q8_0", QT.Q8_0, [64, 2]),
    ("d.q4_k", QT.Q4_K, [256, 2, 2]),
    ("e.bias_of_a_rather_long_name_with_exactly_63_bytes_0123456789ab", QT.F32, [3]),
]
SPEC_ALIGN = 64


def field_value(f):
    vt = f.types[0]
    if vt == VT.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    if vt == VT.ARRAY:
        if len(f.types) < 2:
            return []
        if f.types[1] == VT.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    return f.parts[f.data[0]][0].item()


def check_spec(path):
    r = GGUFReader(path)
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    want = [k for k, _, _ in SPEC_KV]
    if keys != want:
        fail(f"writer: keys {keys} differ from {want}")
    for key, vt, val in SPEC_KV:
        f = r.fields.get(key)
        if f is None:
            continue
        types = tuple(f.types)
        exp_types = vt if isinstance(vt, tuple) else (vt,)
        if vt == (VT.ARRAY, VT.INT32) and not val:
            exp_types = (VT.ARRAY,)  # gguf-py records no element type for an empty array
            types = types[:1]
        if types != exp_types:
            fail(f"writer: {key}: types {types}, expected {exp_types}")
            continue
        got = field_value(f)
        if got != val:
            fail(f"writer: {key}: value {got!r}, expected {val!r}")
    if r.alignment != SPEC_ALIGN:
        fail(f"writer: alignment {r.alignment}")
    tm = tensor_map(r)
    if [t.name for t in r.tensors] != [n for n, _, _ in SPEC_TENSORS]:
        fail(f"writer: tensor names {[t.name for t in r.tensors]}")
    off = 0
    for i, (name, qt, ne) in enumerate(SPEC_TENSORS):
        t = tm.get(name)
        if t is None:
            continue
        bs, bb = gguf.GGML_QUANT_SIZES[qt]
        nbytes = ne[0] // bs * bb * int(np.prod(ne[1:], dtype=np.int64))
        if t.tensor_type != qt or [int(x) for x in t.shape] != ne:
            fail(f"writer: {name}: type {t.tensor_type!r} shape {list(t.shape)}, expected {qt!r} {ne}")
        if int(t.n_bytes) != nbytes:
            fail(f"writer: {name}: {t.n_bytes} bytes, expected {nbytes}")
        rel = int(t.data_offset) - int(r.data_offset)
        if rel != off or int(t.data_offset) % SPEC_ALIGN:
            fail(f"writer: {name}: offset {rel} (absolute {t.data_offset}), expected {off}")
        pattern = ((np.arange(nbytes, dtype=np.int64) * 7 + i * 31 + 1) % 251).astype(np.uint8)
        raw = np.frombuffer(r.data[int(t.data_offset):int(t.data_offset) + nbytes], dtype=np.uint8)
        if not np.array_equal(raw, pattern):
            fail(f"writer: {name}: data bytes differ")
        off = (off + nbytes + SPEC_ALIGN - 1) // SPEC_ALIGN * SPEC_ALIGN
    if len(r.data) != int(r.data_offset) + off:
        fail(f"writer: file size {len(r.data)}, expected {int(r.data_offset) + off}")
    print(f"writer: {len(SPEC_KV)} keys and {len(SPEC_TENSORS)} tensors checked with GGUFReader")


class GgufInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def check_ggml_reads(lib, path):
    """llama.cpp's own GGUF parser (gguf_init_from_file) must accept the file and see the
    same tensors at the same offsets as gguf-py."""
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, GgufInitParams]
    for fn, rt in (("gguf_get_n_kv", ctypes.c_int64), ("gguf_get_n_tensors", ctypes.c_int64),
                   ("gguf_get_alignment", ctypes.c_size_t), ("gguf_get_data_offset", ctypes.c_size_t)):
        getattr(lib, fn).restype = rt
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
    lib.gguf_get_tensor_name.restype = ctypes.c_char_p
    lib.gguf_get_tensor_name.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_get_tensor_offset.restype = ctypes.c_size_t
    lib.gguf_get_tensor_offset.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_get_tensor_type.restype = ctypes.c_int
    lib.gguf_get_tensor_type.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    ctx = lib.gguf_init_from_file(path.encode(), GgufInitParams(True, None))
    if not ctx:
        fail(f"llama.cpp's gguf_init_from_file rejects {path}")
        return
    ll_runs["parser"] += 1
    r = GGUFReader(path)
    n_kv = sum(1 for k in r.fields if not k.startswith("GGUF."))
    if lib.gguf_get_n_kv(ctx) != n_kv or lib.gguf_get_n_tensors(ctx) != len(r.tensors):
        fail(f"llama.cpp sees {lib.gguf_get_n_kv(ctx)} keys / {lib.gguf_get_n_tensors(ctx)} tensors in {path}")
    if lib.gguf_get_data_offset(ctx) != int(r.data_offset) or lib.gguf_get_alignment(ctx) != r.alignment:
        fail(f"llama.cpp: data offset {lib.gguf_get_data_offset(ctx)} alignment {lib.gguf_get_alignment(ctx)}")
    for i, t in enumerate(r.tensors):
        name = lib.gguf_get_tensor_name(ctx, i).decode()
        off = lib.gguf_get_tensor_offset(ctx, i)
        if name != t.name or off != int(t.data_offset) - int(r.data_offset) or \
                lib.gguf_get_tensor_type(ctx, i) != int(t.tensor_type):
            fail(f"llama.cpp: tensor {i} is {name} at {off}, gguf-py: {t.name} at {int(t.data_offset) - int(r.data_offset)}")
    lib.gguf_free(ctx)
    print(f"llama.cpp's gguf parser reads {os.path.basename(path)}: {n_kv} keys, {len(r.tensors)} tensors")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    lib, libpath = load_ggml()
    check_quant(sys.argv[1], lib, libpath)
    check_spec(sys.argv[2])
    if lib is not None:
        for p in sys.argv[1:3]:
            check_ggml_reads(lib, p)
        print("llama.cpp comparisons run: " + ", ".join(f"{k} {ll_runs[k]} of {ll_want[k]}" for k in ll_runs))
        for k in ll_runs:
            if ll_runs[k] != ll_want[k] or ll_want[k] == 0:
                fail(f"llama.cpp comparisons ({k}): {ll_runs[k]} run, {ll_want[k]} expected")
    print(f"check_quant_gguf_py: {'OK' if not failures else f'{len(failures)} failure(s)'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
