"""Golden GGUF header facts from the reference reader (the `gguf` package of llama.cpp).

For each real test model: file size, tensor count, parameter count, data offset, file type and
every tensor's name, ggml type and shape. forja's own header reader must agree exactly.

Usage: python gguf_headers.py DIR_WITH_GGUFS OUT.json
"""
import hashlib
import json
import os
import sys

from gguf import GGUFReader

FILES = [
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "gemma-3-270m-q4_k_m.gguf",
]


def field_value(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


def main(src, out):
    result = {}
    for name in FILES:
        path = os.path.join(src, name)
        r = GGUFReader(path)
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        tensors = [
            {"name": t.name, "type": t.tensor_type.name.lower(), "ne": [int(d) for d in t.shape], "n_bytes": int(t.n_bytes)}
            for t in r.tensors
        ]
        result[name] = {
            "sha256": h.hexdigest(),
            "file_bytes": os.path.getsize(path),
            "architecture": field_value(r, "general.architecture"),
            "file_type": field_value(r, "general.file_type"),
            "n_tensors": len(r.tensors),
            "n_params": sum(int(t.n_elements) for t in r.tensors),
            "data_offset": int(r.data_offset),
            "tensors": tensors,
        }
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
