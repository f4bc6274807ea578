"""Compares forja's and llama-quantize's GGUFs of one model, recipe by recipe: tensor types,
tensors whose bytes are identical, and each file's relative RMS error against the f16 GGUF's
weights (all quantized tensors together). Prints markdown.

Usage: python compare.py F16.gguf WORK_DIR RECIPE...   (WORK_DIR holds forja-R.gguf, llama-R.gguf)
"""
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def tensors(path):
    return {t.name: t for t in GGUFReader(path).tensors}


def values(t):
    return dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)


def main(f16_path, work, recipes):
    ref = tensors(f16_path)
    ref_vals = {n: values(t) for n, t in ref.items()}
    print("| recipe | tensors | same type | identical bytes | forja rel. RMS error | llama.cpp rel. RMS error | forja MiB | llama.cpp MiB |")
    print("|---|---|---|---|---|---|---|---|")
    notes = []
    for r in recipes:
        fp, lp = os.path.join(work, f"forja-{r}.gguf"), os.path.join(work, f"llama-{r}.gguf")
        f, l = tensors(fp), tensors(lp)
        if set(f) != set(l):
            notes.append(f"{r}: tensor names differ: only forja {sorted(set(f) - set(l))}, only llama.cpp {sorted(set(l) - set(f))}")
        names = sorted(set(f) & set(l))
        same_type = sum(f[n].tensor_type == l[n].tensor_type for n in names)
        same_bytes = sum(f[n].tensor_type == l[n].tensor_type and np.array_equal(f[n].data, l[n].data) for n in names)
        err = {"forja": [0.0, 0.0], "llama": [0.0, 0.0]}
        for n in names:
            if len(ref[n].shape) < 2 or n not in ref_vals:
                continue
            x = ref_vals[n]
            for who, t in (("forja", f[n]), ("llama", l[n])):
                d = values(t) - x
                err[who][0] += float(d @ d)
                err[who][1] += float(x @ x)
            if f[n].tensor_type != l[n].tensor_type:
                notes.append(f"{r}: {n} is {f[n].tensor_type.name} in forja's, {l[n].tensor_type.name} in llama.cpp's")
        rms = {k: (v[0] / v[1]) ** 0.5 for k, v in err.items()}
        mib = lambda p: os.path.getsize(p) / 2**20
        print(f"| {r} | {len(names)} | {same_type} | {same_bytes} | {rms['forja']:.5f} | {rms['llama']:.5f} | {mib(fp):.1f} | {mib(lp):.1f} |")
    if notes:
        print()
        for n in notes[:40]:
            print(f"- {n}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
