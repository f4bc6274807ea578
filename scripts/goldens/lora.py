"""LoRA training goldens from HF PEFT + transformers, for forja's trainer.

On the tiny random Llama of fixtures/tiny/llama (f32): LoRA adapters on all seven projections
with a fixed random initialization (A and B both non-zero, so the first step already moves the
loss), fixed token data with loss on marked tokens only, AdamW with warmup + cosine schedule,
gradient accumulation and clipping, no dropout; 20 optimizer steps. Written to OUT_DIR:

  init/        the initial adapter in PEFT layout (adapter_config.json, adapter_model.safetensors)
               — forja starts from exactly these values
  trained/     the adapter after the 20 steps, saved by PEFT's save_pretrained
  train.json   hyper-parameters, the examples (ids + which tokens are trained), the loss of each
               step, the probe prompt
  probe.safetensors   `logits` [probe_len, vocab]: the base model with `trained/` on the probe

The semantics forja implements: an optimizer step takes batch × grad_accum examples from the
data in order (cycling); its loss is the summed cross-entropy of every trained token (token t+1
predicted at position t) divided by the number of trained tokens in the step; gradients are
clipped to a global L2 norm; the learning rate of step k (from 0) is lr · schedule(k), the
schedule being transformers' get_cosine_schedule_with_warmup.

Usage: python lora.py TINY_LLAMA_DIR OUT_DIR   (pinned versions: reference.requirements.txt)

       python lora.py check TINY_LLAMA_DIR GOLDEN_DIR ADAPTER_DIR
         loads an adapter forja wrote after the same 20 steps with PEFT
         (`FORJA_LORA_GOLDEN_OUT=ADAPTER_DIR cargo test -p forja-train --test peft_goldens`)
         and checks PEFT computes the golden probe logits with it (max difference < 1e-4).
"""
import json
import os
import shutil
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

HYPER = dict(
    rank=4,
    alpha=8.0,
    targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    lr=1e-2,
    weight_decay=0.01,
    beta1=0.9,
    beta2=0.999,
    eps=1e-8,
    warmup_steps=3,
    steps=20,
    batch=2,
    grad_accum=2,
    max_grad_norm=1.0,
)

# (ids, index of the first trained token): a prompt part, then the part the model learns.
EXAMPLES = [
    ([1, 17, 42, 99, 3, 250, 7, 7, 2], 5),
    ([1, 5, 200, 13, 13, 77, 250, 8, 31, 64, 2], 6),
    ([1, 10, 11, 12, 13, 14, 15, 250, 16, 17, 18, 19, 2], 8),
    ([1, 90, 250, 91, 2], 3),
    ([1, 33, 34, 35, 36, 37, 38, 39, 40, 250, 120, 121, 122, 123, 2], 10),
    ([1, 7, 250, 7, 7, 7, 2], 3),
]
PROBE = [1, 17, 42, 250, 7, 99, 12, 2, 64]


def save_adapter(model, path):
    model.save_pretrained(path)
    # The generated model card says nothing the config does not.
    os.remove(os.path.join(path, "README.md"))


def train_steps(model, hyper):
    """The step semantics above, for every parameter that requires a gradient: each step takes
    batch × grad_accum examples in order (cycling), sums the cross-entropy of their trained
    tokens divided by the step's trained tokens, clips, and steps AdamW on the schedule.
    Returns each step's loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=hyper["lr"], betas=(hyper["beta1"], hyper["beta2"]),
                            eps=hyper["eps"], weight_decay=hyper["weight_decay"])
    sched = get_cosine_schedule_with_warmup(opt, hyper["warmup_steps"], hyper["steps"])
    model.train()
    per_step = hyper["batch"] * hyper["grad_accum"]
    cursor = 0
    losses = []
    for _ in range(hyper["steps"]):
        chosen = [EXAMPLES[(cursor + i) % len(EXAMPLES)] for i in range(per_step)]
        cursor += per_step
        trained_tokens = sum(len(ids) - first for ids, first in chosen)
        opt.zero_grad()
        total = 0.0
        for ids, first in chosen:
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            # position t predicts token t + 1; trained tokens are first..len
            pred = logits[first - 1:len(ids) - 1]
            target = torch.tensor(ids[first:])
            loss = torch.nn.functional.cross_entropy(pred, target, reduction="sum") / trained_tokens
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, hyper["max_grad_norm"])
        opt.step()
        sched.step()
        losses.append(total)
    return losses


def main(tiny_dir, out_dir):
    for sub in ("init", "trained"):
        shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32,
                                                 attn_implementation="eager")
    config = LoraConfig(r=HYPER["rank"], lora_alpha=HYPER["alpha"], lora_dropout=0.0,
                        target_modules=HYPER["targets"], bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                a = module.lora_A["default"].weight
                b = module.lora_B["default"].weight
                a.copy_((torch.rand(a.shape, generator=gen) * 2 - 1) / a.shape[1] ** 0.5)
                b.copy_((torch.rand(b.shape, generator=gen) * 2 - 1) * 0.05)
    save_adapter(model, os.path.join(out_dir, "init"))

    losses = train_steps(model, HYPER)
    model.eval()
    save_adapter(model, os.path.join(out_dir, "trained"))
    with torch.no_grad():
        probe_logits = model(input_ids=torch.tensor([PROBE])).logits[0].contiguous()
    save_file({"logits": probe_logits}, os.path.join(out_dir, "probe.safetensors"))
    golden = dict(
        hyper=HYPER,
        examples=[dict(ids=ids, trained=[i >= first for i in range(len(ids))])
                  for ids, first in EXAMPLES],
        losses=losses,
        probe=PROBE,
    )
    with open(os.path.join(out_dir, "train.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print("losses:", " ".join(f"{l:.5f}" for l in losses))


def check(tiny_dir, golden_dir, adapter_dir):
    from peft import PeftModel
    from safetensors.torch import load_file

    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32,
                                                attn_implementation="eager")
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([PROBE])).logits[0]
    want = load_file(os.path.join(golden_dir, "probe.safetensors"))["logits"]
    diff = (logits - want).abs().max().item()
    print(f"PEFT with {adapter_dir}: max logit difference {diff:.2e}")
    if diff >= 1e-4:
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main(sys.argv[1], sys.argv[2])
