"""Golden greedy continuations of the real test models, from transformers on the dequantized
GGUF weights (f32): for each text prompt, the token ids transformers' tokenizer gives, the 32
greedy tokens, and the gap between the two best logits at each step (so a test can tell a real
mismatch from a near-tie).

Usage: python real_models.py DIR_WITH_GGUFS OUT.json   (pins: reference.requirements.txt)
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODELS = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": "chat",
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf": "chat",
}
# gemma-3-270m-q4_k_m.gguf is left out: transformers 5.17's GGUF loader gives degenerate output
# for it (" and and and …" for every prompt), so it is no reference.
PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that checks whether a number is prime.",
    "La cláusula de rescisión permite",
]
STEPS = 32


def main(src, out):
    torch.manual_seed(0)
    result = {}
    for name, mode in MODELS.items():
        tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
        model.eval()
        entries = []
        for text in PROMPTS:
            if mode == "chat":
                rendered = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                   tokenize=False)
                ids = tok(rendered, add_special_tokens=False)["input_ids"]
            else:
                ids = tok(text)["input_ids"]
            plain = tok(text, add_special_tokens=False)["input_ids"]
            cur = torch.tensor([ids])
            greedy, gaps = [], []
            past = None
            with torch.no_grad():
                for _ in range(STEPS):
                    o = model(cur, past_key_values=past, use_cache=True)
                    past = o.past_key_values
                    logits = o.logits[0, -1].float()
                    top2 = torch.topk(logits, 2)
                    nxt = int(top2.indices[0])
                    greedy.append(nxt)
                    gaps.append(float(top2.values[0] - top2.values[1]))
                    cur = torch.tensor([[nxt]])
            entries.append({"text": text, "prompt_ids": [int(i) for i in ids], "plain_ids": [int(i) for i in plain],
                            "greedy": greedy, "top2_gap": gaps, "continuation": tok.decode(greedy)})
            print(name, repr(tok.decode(greedy)[:80]))
        result[name] = {"mode": mode, "prompts": entries}
    with open(out, "w") as fh:
        json.dump({"transformers": __import__("transformers").__version__, "torch": torch.__version__,
                   "models": result}, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
