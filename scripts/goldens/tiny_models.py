"""Tiny random-init models of every decoder family forja runs, with golden logits.

For each family: a config with small dimensions that still exercises the family's features
(GQA, QKV bias, QK-norm, sliding windows, soft-capping, MoE routing, fused projections), random
weights from a fixed seed, saved as `config.json` + `model.safetensors` (f32), and for several
prompts (token ids) the f32 logits of every position plus 8 greedy tokens, saved as
`goldens.safetensors` (tensors `logits.{i}` [prompt_len, vocab], `greedy.{i}` [8]) and
`goldens.json` (the prompts and the greedy tokens, readable). LongRoPE families also record
`short_logits` for SHORT_PROMPT, which fits the original context.

Usage: python tiny_models.py OUT_DIR [FAMILY…]   (pinned versions: reference.requirements.txt)
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 256
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)

FAMILIES = {
    "llama": dict(model_type="llama", rope_theta=10000.0),
    "llama3_rope": dict(
        model_type="llama",
        rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64),
        tie_word_embeddings=True,
    ),
    "mistral": dict(model_type="mistral", sliding_window=6, head_dim=16),
    "qwen2": dict(model_type="qwen2", rope_theta=1000000.0, tie_word_embeddings=True),
    "qwen3": dict(model_type="qwen3", head_dim=32, rope_theta=1000000.0),
    "gemma": dict(model_type="gemma", head_dim=16, hidden_activation="gelu_pytorch_tanh",
                  tie_word_embeddings=True),
    "gemma2": dict(model_type="gemma2", head_dim=16, query_pre_attn_scalar=16, sliding_window=6,
                   attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                   hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
    "gemma3": dict(model_type="gemma3_text", head_dim=16, query_pre_attn_scalar=16, sliding_window=6,
                   sliding_window_pattern=2, rope_local_base_freq=10000.0, rope_theta=1000000.0,
                   rope_scaling=dict(rope_type="linear", factor=2.0),
                   hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
    "phi3": dict(model_type="phi3", rope_theta=10000.0, pad_token_id=0),
    # LongRoPE with a 4-token original context: the goldens' prompts all run on the long factors,
    # SHORT_PROMPT (within 4 tokens) on the short ones. Partial rotary as in Phi-4-mini.
    "phi3_longrope": dict(
        model_type="phi3", rope_theta=10000.0, pad_token_id=0, partial_rotary_factor=0.75,
        original_max_position_embeddings=4,
        rope_scaling=dict(type="longrope", long_factor=[1.0, 1.5, 2.5, 4.0, 7.0, 11.0],
                          short_factor=[1.0, 1.1, 1.2, 1.4, 1.7, 2.0]),
    ),
    "mixtral": dict(model_type="mixtral", num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(model_type="qwen2_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=48, decoder_sparse_step=1, norm_topk_prob=False),
    "qwen3_moe": dict(model_type="qwen3_moe", head_dim=16, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=32, norm_topk_prob=True, decoder_sparse_step=1),
}

SHORT_PROMPT = [1, 17, 42]
PROMPTS = [
    [1, 17, 42, 99, 3],
    [5, 200, 13, 13, 77, 250, 8, 31, 64, 2, 9, 120],
    list(range(10, 30)),
]


def build(name, spec, out):
    torch.manual_seed(1234)
    cfg_kwargs = dict(COMMON)
    cfg_kwargs.update(spec)
    model_type = cfg_kwargs.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg_kwargs)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    # Random init is tiny by default; widen it so logits differ clearly between tokens.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n and model_type in ("gemma", "gemma2", "gemma3_text"):
                p.copy_(0.1 * torch.randn_like(p))  # Gemma scales by (1 + w)
            elif "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * 0.08)
    model.eval()
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    tensors = {}
    greedy_all = []
    with torch.no_grad():
        for i, prompt in enumerate(PROMPTS):
            ids = torch.tensor([prompt])
            logits = model(ids).logits[0].float()
            tensors[f"logits.{i}"] = logits.contiguous()
            gen = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
            greedy = gen[0, len(prompt):].tolist()
            tensors[f"greedy.{i}"] = torch.tensor(greedy, dtype=torch.int64)
            greedy_all.append(greedy)
        if spec.get("rope_scaling", {}).get("type") == "longrope":
            tensors["short_logits"] = model(torch.tensor([SHORT_PROMPT])).logits[0].float().contiguous()
    save_file(tensors, os.path.join(d, "goldens.safetensors"))
    with open(os.path.join(d, "goldens.json"), "w") as fh:
        import transformers
        names = sorted(n for n, _ in model.state_dict().items())
        extra = {"short_prompt": SHORT_PROMPT} if "short_logits" in tensors else {}
        json.dump({"family": name, "model_type": model_type, "prompts": PROMPTS, "greedy": greedy_all, **extra,
                   "torch": torch.__version__, "transformers": transformers.__version__,
                   "state_dict": names}, fh, indent=1)
        fh.write("\n")


def main(out, only=None):
    for name, spec in FAMILIES.items():
        if only and name not in only:
            continue
        build(name, spec, out)
        print("built", name)


if __name__ == "__main__":
    # Optional family names after OUT_DIR rebuild only those.
    main(sys.argv[1], sys.argv[2:] or None)
