"""Goldens for forja's quantizers: random f32 rows and what ggml's own quantizer
(`ggml_quantize_chunk`, no importance matrix: what `llama-quantize` runs) makes of them.

Usage: python ggml_quantize.py GGML_QUANT_BIN OUT_DIR
GGML_QUANT_BIN is scripts/goldens/ggml_quant.c built against llama.cpp's libggml (see
scripts/goldens/run). Writes OUT_DIR/quantize.rows (f32, little-endian, rows of 256) and
OUT_DIR/quantize.<TYPE> (the quantized rows) for every type forja writes.
"""
import os
import subprocess
import sys

import numpy as np

TYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q2_K": 10, "Q3_K": 11,
         "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}
COLS = 256


def rows():
    rng = np.random.default_rng(20261126)
    out = [rng.normal(0.0, 0.02, size=(24, COLS)),          # weight-like
           rng.normal(0.0, 1.0, size=(8, COLS)),            # unit scale
           rng.uniform(-1.0, 1.0, size=(4, COLS)),
           rng.standard_t(3, size=(8, COLS)) * 0.05]        # heavy tails
    spiky = rng.normal(0.0, 0.02, size=(8, COLS))
    for r in range(8):
        spiky[r, (r * 37) % COLS] = 1.5 if r % 2 else -1.5   # one outlier a row
    out.append(spiky)
    shifted = rng.normal(0.3, 0.05, size=(4, COLS))          # all positive
    out.append(shifted)
    out.append(-shifted)                                     # all negative
    consts = np.zeros((4, COLS))
    consts[1, :] = 0.37
    consts[2, :] = -2.5
    consts[3, :128] = 1e-3                                   # half zero, half constant
    out.append(consts)
    tiny = rng.normal(0.0, 1e-6, size=(2, COLS))             # scales in f16 subnormals
    out.append(tiny)
    return np.concatenate(out).astype("<f4")


def main(binary, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    data = rows()
    data.tofile(os.path.join(out_dir, "quantize.rows"))
    for name, type_id in TYPES.items():
        res = subprocess.run([binary, str(type_id), str(COLS)], input=data.tobytes(),
                             capture_output=True, check=True)
        with open(os.path.join(out_dir, f"quantize.{name}"), "wb") as fh:
            fh.write(res.stdout)
    print(f"wrote {len(data)} rows of {COLS} and {len(TYPES)} quantized copies to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
