"""Seed inputs for the GGUF header fuzzer, written by the reference writer (`gguf` package):
small headers of several architectures, metadata types and quantized tensor types.

Usage: python fuzz_seeds.py OUT_DIR
"""
import os
import sys

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType


def write(path, arch, layers, hidden, extra_meta, qtype=None):
    w = GGUFWriter(path, arch)
    w.add_context_length(512)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(hidden * 2)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_token_list([f"t{i}".encode() for i in range(16)])
    w.add_token_scores([0.0] * 16)
    for k, v in extra_meta:
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        else:
            w.add_string(k, v)
    w.add_tensor("token_embd.weight", np.zeros((16, hidden), dtype=np.float16))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        if qtype is None:
            w.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((hidden, hidden), dtype=np.float32))
        else:
            # Raw quantized bytes: rows of `hidden` weights in 32-weight blocks of `qtype`.
            block_bytes = {GGMLQuantizationType.Q8_0: 34, GGMLQuantizationType.Q4_0: 18}[qtype]
            raw = np.zeros((hidden, hidden // 32 * block_bytes), dtype=np.uint8)
            w.add_tensor(f"blk.{i}.attn_q.weight", raw, raw_dtype=qtype)
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(out):
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "llama_f32"), "llama", 1, 32, [])
    write(os.path.join(out, "qwen2_q8_0"), "qwen2", 2, 64, [("general.file_type", 7)], GGMLQuantizationType.Q8_0)
    write(os.path.join(out, "gemma3_q4_0"), "gemma3", 1, 64,
          [("gemma3.attention.sliding_window", 512), ("general.name", "seed")], GGMLQuantizationType.Q4_0)
    write(os.path.join(out, "qwen3moe"), "qwen3moe", 1, 32,
          [("qwen3moe.expert_count", 4), ("qwen3moe.expert_used_count", 2), ("qwen3moe.expert_feed_forward_length", 16)])


if __name__ == "__main__":
    main(sys.argv[1])
