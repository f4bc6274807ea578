"""Full fine-tuning goldens from transformers, for `forja tune --full`'s trainer.

On the tiny random models of fixtures/tiny/{llama,qwen2,gemma3} (f32; separate and tied heads,
q/k/v biases, Gemma's (1 + w) norms, QK-norm, post-norms and embedding scale): every parameter
trained, the token data and step semantics of lora.py (loss on marked tokens, summed and divided
by the step's trained tokens; AdamW with warmup + cosine schedule, accumulation, clipping), 10
optimizer steps. Written to OUT_DIR/FAMILY.json: the hyper-parameters, the examples, each step's
loss, and a few trained values (row 1 — the BOS token's — of the embedding table and of layer
0's q projection, the final norm's weight) after the last step.

Usage: python full_finetune.py TINY_DIR OUT_DIR   (pinned versions: reference.requirements.txt)
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM

# (ids, index of the first trained token): the data of the LoRA goldens.
from lora import EXAMPLES, train_steps

HYPER = dict(
    lr=2e-3,
    weight_decay=0.01,
    beta1=0.9,
    beta2=0.999,
    eps=1e-8,
    warmup_steps=2,
    steps=10,
    batch=2,
    grad_accum=2,
    max_grad_norm=1.0,
)

PROBES = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"]


def run(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation="eager")
    losses = train_steps(model, HYPER)
    state = model.state_dict()
    probes = {name: state[name].reshape(-1)[:16].tolist() if state[name].dim() == 1
              else state[name][1, :16].tolist() for name in PROBES}
    return losses, probes


def main(tiny_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for family in ("llama", "qwen2", "gemma3"):
        torch.manual_seed(0)
        losses, probes = run(os.path.join(tiny_dir, family))
        golden = dict(
            hyper=HYPER,
            examples=[dict(ids=ids, trained=[i >= first for i in range(len(ids))])
                      for ids, first in EXAMPLES],
            losses=losses,
            probes=probes,
        )
        with open(os.path.join(out_dir, f"{family}.json"), "w") as f:
            json.dump(golden, f, indent=1)
            f.write("\n")
        print(family, "losses:", " ".join(f"{l:.5f}" for l in losses))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
