"""Golden dequantization of every GGML block type forja computes, by the reference `gguf`
package (numpy): for each type, random blocks (seeded; scale fields set to finite fp16 values)
and the floats gguf-py decodes them to. Saved as fixtures/goldens/dequant.safetensors-like
binary: a JSON index + raw little-endian data (no torch needed).

Usage: python dequant.py OUT_DIR
"""
import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

# Q8_K is left out: gguf-py has no dequantizer for it (it is an activation type in practice).
BLOCKS = 8
# type -> (block bytes, [(offset, kind)] of scale fields to make finite)
LAYOUT = {
    T.Q4_0: (18, [(0, "d")]),
    T.Q4_1: (20, [(0, "d"), (2, "m")]),
    T.Q5_0: (22, [(0, "d")]),
    T.Q5_1: (24, [(0, "d"), (2, "m")]),
    T.Q8_0: (34, [(0, "d")]),
    T.Q2_K: (84, [(80, "d"), (82, "m")]),
    T.Q3_K: (110, [(108, "d")]),
    T.Q4_K: (144, [(0, "d"), (2, "m")]),
    T.Q5_K: (176, [(0, "d"), (2, "m")]),
    T.Q6_K: (210, [(208, "d")]),
    T.F16: (2, []),
    T.BF16: (2, []),
}


def main(out):
    rng = np.random.default_rng(20261126)
    index = {}
    blobs = []
    offset = 0
    for qtype, (block_bytes, scales) in LAYOUT.items():
        raw = rng.integers(0, 256, size=(BLOCKS, block_bytes), dtype=np.uint8)
        for at, kind in scales:
            if kind == "f32":
                v = rng.uniform(-0.05, 0.05, size=BLOCKS).astype(np.float32)
                raw[:, at:at + 4] = v.view(np.uint8).reshape(BLOCKS, 4)
            else:
                lo, hi = (-0.1, 0.1) if kind == "d" else (0.0, 0.05)
                v = rng.uniform(lo, hi, size=BLOCKS).astype(np.float16)
                raw[:, at:at + 2] = v.view(np.uint8).reshape(BLOCKS, 2)
        if qtype == T.F16:
            raw = rng.uniform(-4, 4, size=BLOCKS * 128).astype(np.float16).view(np.uint8).reshape(BLOCKS, -1)
        if qtype == T.BF16:
            f = rng.uniform(-4, 4, size=BLOCKS * 128).astype(np.float32)
            raw = (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(BLOCKS, -1)
        flat = raw.reshape(-1)
        values = dequantize(flat, qtype).astype(np.float32).reshape(-1)
        assert np.all(np.isfinite(values)), qtype.name
        index[qtype.name] = {"raw": [offset, offset + flat.nbytes], "values": [offset + flat.nbytes, offset + flat.nbytes + values.nbytes],
                             "n": int(values.size)}
        blobs += [flat.tobytes(), values.tobytes()]
        offset += flat.nbytes + values.nbytes
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "dequant.bin"), "wb") as fh:
        for b in blobs:
            fh.write(b)
    with open(os.path.join(out, "dequant.json"), "w") as fh:
        json.dump(index, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
