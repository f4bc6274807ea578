"""A tiny random cross-encoder (reranker) and its golden scores, from transformers (f32, eager).

A `BertForSequenceClassification` with one label — the layout of sentence-transformers'
CrossEncoder rerankers such as cross-encoder/ms-marco-MiniLM-L-6-v2 — of the tiny BERT's shape
and WordPiece vocabulary (encoders.py), saved to OUT_DIR (`config.json`, `model.safetensors`,
`tokenizer.json`, `tokenizer_config.json`) with `goldens.json`: (query, passage) pairs, the ids
and token types the tokenizer gives each pair (truncated to the model's 64 positions, the
longer side cut first), and the logit transformers computes for each pair in one padded batch.

Usage: python cross_encoder.py OUT_DIR   (pins: reference.requirements.txt)
"""
import json
import os
import sys

import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification

from encoders import save_widened, tiny_tokenizer

MAX_LEN = 64
PAIRS = [
    ("which clause covers payment?", "payment is due in 30 days"),
    ("which clause covers payment?", "the cat sat on the mat"),
    ("termination notice", "Termination requires thirty days of written notice by either party."),
    ("termination notice", "The quick brown fox jumps over the lazy dog."),
    ("a query", " ".join(["the contract clause of the parties"] * 20)),
]


def main(out):
    torch.manual_seed(4321)
    tok = tiny_tokenizer()
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=MAX_LEN, type_vocab_size=2,
                        hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0, num_labels=1)
    model = BertForSequenceClassification(config)
    tok.model_max_length = MAX_LEN
    save_widened(model, tok, out)
    queries = [q for q, _ in PAIRS]
    passages = [p for _, p in PAIRS]
    # truncation=True is "longest_first", what sentence-transformers' CrossEncoder asks for.
    enc = tok(queries, passages, padding=True, truncation=True, max_length=MAX_LEN,
              return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[:, 0]
    items = []
    for i, (q, p) in enumerate(PAIRS):
        n = int(enc["attention_mask"][i].sum())
        items.append({"query": q, "passage": p,
                      "ids": enc["input_ids"][i][:n].tolist(),
                      "type_ids": enc["token_type_ids"][i][:n].tolist(),
                      "logit": float(logits[i])})
    with open(os.path.join(out, "goldens.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "max_length": MAX_LEN, "pairs": items}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1])
