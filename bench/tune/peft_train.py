"""The peer of `forja tune` in bench/tune/peft-compare.sh: LoRA training steps with HF PEFT +
transformers on the CPU, on sequences of exactly --seq-len tokens, reporting tokens/s per
optimizer step and the process's peak resident memory.

    python peft_train.py --model HF_DIR --seq-len 256 --batch 1 --steps 6 --rank 16 \
        --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj [--dtype f32|bf16]
        [--gradient-checkpointing] [--full] --out result.json

Each step is forward, backward and AdamW's update over `--batch` sequences (no accumulation),
the loss on every position, as `forja tune` with --batch B --grad-accum 1 on records cut to the
same length. The first step (warm-up: allocations, kernel selection) is reported but left out
of the mean.
"""

import argparse
import json
import resource
import time


def rss_now_bytes():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--full", action="store_true")
    p.add_argument("--out", required=True)
    a = p.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rss_start = rss_now_bytes()
    dtype = torch.float32 if a.dtype == "f32" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, attn_implementation="sdpa")
    if a.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if not a.full:
        cfg = LoraConfig(
            r=a.rank,
            lora_alpha=a.alpha,
            lora_dropout=a.dropout,
            target_modules=a.targets.split(","),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, cfg)
    model.train()
    rss_loaded = rss_now_bytes()
    trainable = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    steps = []
    for _ in range(a.steps):
        ids = torch.randint(3, vocab, (a.batch, a.seq_len), generator=gen)
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        secs = time.perf_counter() - t0
        steps.append({"seconds": secs, "tokens_per_s": a.batch * a.seq_len / secs,
                      "loss": out.loss.item()})
    timed = steps[1:] or steps
    mean = sum(s["tokens_per_s"] for s in timed) / len(timed)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {
        "peer": "transformers (full fine-tuning)" if a.full else "peft",
        "versions": {"torch": torch.__version__, "peft": __import__("peft").__version__,
                     "transformers": __import__("transformers").__version__},
        "args": vars(a),
        "trainable_params": sum(q.numel() for q in trainable),
        "rss_start_bytes": rss_start,
        "rss_loaded_bytes": rss_loaded,
        "peak_rss_bytes": peak,
        "tokens_per_s": mean,
        "steps": steps,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{result['peer']}: {mean:.1f} tokens/s, peak RSS {peak / 2**20:.0f} MiB "
          f"({a.batch}×{a.seq_len}, rank {a.rank}, {a.dtype})")


if __name__ == "__main__":
    main()
