"""Golden sentence embeddings of BERT encoders, from transformers (f32, eager attention).

1. A tiny random BertModel (hidden 32, 3 layers, a WordPiece vocabulary of a few hundred pieces)
   saved to TINY_DIR (`config.json`, `model.safetensors`, `tokenizer.json`,
   `tokenizer_config.json`) with `goldens.json` (the inputs: texts, or text pairs for token
   types, and the ids transformers' tokenizer gives them) and `goldens.safetensors`: for input i
   the last hidden states `hidden.{i}` [len_i, 32] of one padded batch of all inputs, and the
   L2-normalized pooled vectors `{mode}.{i}` [32] for mode in cls, mean, max, mean_sqrt_len,
   lasttoken.
2. all-MiniLM-L6-v2 (from the test data) on a few sentences, batched with padding: the ids, and
   the embedding sentence-transformers computes (mean over the attention mask, then L2
   normalization), plus one text longer than the model's 256-token limit, truncated as
   sentence-transformers truncates it.

Pooling follows sentence-transformers' `models/Pooling.py`: padded positions are left out of the
mean and the max (set to -1e9 before the max), mean_sqrt_len divides the sum by sqrt(length), cls
takes the first token, lasttoken the last unpadded one.

Usage: python encoders.py TINY_DIR MINILM_DIR OUT.json   (pins: reference.requirements.txt)
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerFast

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("the a an of to in on for is are was be and or not with this that it by from at as "
         "contract clause termination notice party parties days written agreement payment "
         "model embedding sentence vector search query document retrieval cat dog sat mat "
         "quick brown fox jumps over lazy").split()
PIECES = ["##s", "##ed", "##ing", "##ly", "##er", "##tion", "##al"]
TINY_TEXTS = [
    "the cat sat",
    "The quick brown fox jumps over the lazy dog.",
    "Termination requires thirty days of written notice by either party.",
    "embeddings",
    "A query, a document and a vector search: retrieval in 2024!",
]
TINY_PAIRS = [("which clause covers payment?", "payment is due in 30 days")]
MODES = ["cls", "mean", "max", "mean_sqrt_len", "lasttoken"]

MINILM_TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome and I loved every minute of it.",
    "The stock market fell sharply after the interest rate announcement.",
    "¿Qué cláusulas de rescisión hay en el contrato?",
    "Embeddings",
]
# 40 × 11 words: far past 256 tokens.
LONG_TEXT = " ".join(["Retrieval augmented generation grounds the answers of a language model."] * 40)
MAX_SEQ_LENGTH = 256


def tiny_tokenizer():
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'-"))
    vocab = SPECIAL + chars + ["##" + c for c in chars] + WORDS + PIECES
    vocab = list(dict.fromkeys(vocab))
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    for i, t in enumerate(SPECIAL):
        tok.add_special_tokens([t])
        assert tok.token_to_id(t) == i
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]",
                                   pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def pool(hidden, mask, mode):
    """hidden [b, s, h], mask [b, s] (1 = token) → [b, h], as sentence-transformers pools."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        out = hidden[:, 0]
    elif mode in ("mean", "mean_sqrt_len"):
        total = (hidden * m).sum(1)
        count = m.sum(1).clamp(min=1e-9)
        out = total / (count if mode == "mean" else count.sqrt())
    elif mode == "max":
        out = hidden.masked_fill(m == 0, -1e9).max(1).values
    elif mode == "lasttoken":
        last = mask.sum(1) - 1
        out = hidden[torch.arange(hidden.shape[0]), last]
    else:
        raise ValueError(mode)
    return torch.nn.functional.normalize(out, p=2, dim=1)


def save_widened(model, tok, out):
    """Widens a random model's weights (random init is tiny by default: widened, every part of
    the model shows in the output), switches it to eager attention and evaluation, and saves it
    with its tokenizer (without the extra files transformers writes beside tokenizer.json)."""
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "LayerNorm.weight" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * 0.2)
    model.eval()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    for extra in ("special_tokens_map.json", "vocab.txt"):
        if os.path.exists(os.path.join(out, extra)):
            os.remove(os.path.join(out, extra))


def build_tiny(out):
    torch.manual_seed(1234)
    tok = tiny_tokenizer()
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
                        hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0)
    model = BertModel(config, add_pooling_layer=False)
    save_widened(model, tok, out)
    inputs = [[t] for t in TINY_TEXTS] + [list(p) for p in TINY_PAIRS]
    encoded = [tok(*texts) for texts in inputs]
    ids = [e["input_ids"] for e in encoded]
    types = [e["token_type_ids"] for e in encoded]
    width = max(len(i) for i in ids)
    pad = lambda rows: torch.tensor([r + [0] * (width - len(r)) for r in rows])
    input_ids, token_type_ids = pad(ids), pad(types)
    mask = pad([[1] * len(i) for i in ids])
    tensors = {}
    with torch.no_grad():
        hidden = model(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids).last_hidden_state
        for mode in MODES:
            pooled = pool(hidden, mask, mode)
            for i in range(len(ids)):
                tensors[f"{mode}.{i}"] = pooled[i].contiguous()
    for i, row in enumerate(ids):
        tensors[f"hidden.{i}"] = hidden[i, : len(row)].contiguous()
    save_file(tensors, os.path.join(out, "goldens.safetensors"))
    with open(os.path.join(out, "goldens.json"), "w") as fh:
        json.dump({"inputs": inputs, "ids": ids, "type_ids": types, "modes": MODES,
                   "torch": torch.__version__, "transformers": transformers.__version__,
                   "state_dict": sorted(model.state_dict())}, fh, indent=1)
        fh.write("\n")


def minilm(src, out):
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModel.from_pretrained(src, dtype=torch.float32, attn_implementation="eager")
    model.eval()

    def embed(texts):
        enc = tok(texts, padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        return enc, pool(hidden, enc["attention_mask"], "mean")

    enc, vectors = embed(MINILM_TEXTS)
    sentences = []
    for i, text in enumerate(MINILM_TEXTS):
        n = int(enc["attention_mask"][i].sum())
        sentences.append({"text": text, "ids": enc["input_ids"][i, :n].tolist(),
                          "embedding": [float(f"{x:.8g}") for x in vectors[i].tolist()]})
    long_enc, long_vec = embed([LONG_TEXT])
    result = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "pooling": "mean, L2-normalized",
        "max_seq_length": MAX_SEQ_LENGTH,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentences": sentences,
        "long": {"text": LONG_TEXT, "untruncated_tokens": len(tok(LONG_TEXT)["input_ids"]),
                 "truncated_ids": long_enc["input_ids"][0].tolist(),
                 "embedding": [float(f"{x:.8g}") for x in long_vec[0].tolist()]},
    }
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


if __name__ == "__main__":
    build_tiny(sys.argv[1])
    minilm(sys.argv[2], sys.argv[3])
