"""Writes an HF model folder (safetensors, config, tokenizer with its chat template) from a GGUF
file, dequantized by transformers, so that `forja tune` and HF PEFT train the same weights.

    python gguf_to_hf.py MODEL.gguf OUT_DIR [--dtype f32|bf16]
"""

import argparse
import os


def main():
    p = argparse.ArgumentParser()
    p.add_argument("gguf")
    p.add_argument("out")
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    a = p.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(a.gguf))
    dtype = torch.float32 if a.dtype == "f32" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # The loaded model remembers it came from GGUF and refuses to save: copy its (dequantized)
    # weights into a plain model of the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(a.out, safe_serialization=True)
    tok.save_pretrained(a.out)
    print(f"{a.out}: {sum(q.numel() for q in model.parameters()) / 1e6:.1f} M params, {a.dtype}")


if __name__ == "__main__":
    main()
