"""Golden token ids and chat prompts from transformers for the HF tokenizer packages that
scripts/fetch-testdata installs (tokenizer.json + tokenizer_config.json of Llama 3.1, Qwen2.5,
Qwen3, Gemma 3 and Mistral 7B): ids of a set of texts (`tokenizer(text)`, special tokens added as
transformers adds them), and for each conversation of chat_templates.py the rendered prompt
(`apply_chat_template`, generation prompt on) and its ids.

Usage: python hf_tokenizers.py TOKENIZERS_DIR OUT.json
"""
import json
import os
import sys

from transformers import AutoTokenizer

from chat_templates import CONVERSATIONS

TEXTS = [
    "Hello world",
    " Hello world",
    "hello  world   with   spaces",
    "trailing spaces   ",
    "\n\nnew\nlines\n\n\n",
    "\ttabs\tand\r\ncarriage returns",
    "¿Qué cláusulas de rescisión hay en el contrato?",
    "Ünïcödé façade naïve café",
    "日本語のテキストと中文文本",
    "emoji 🦙🔥👍🏽 and symbols ©®™",
    "numbers 1234567890 3.14159 1,000,000",
    "def f(x):\n    return x ** 2  # square\n",
    "<|im_start|>user\nhi<|im_end|>",
    "<start_of_turn>user\nhi<end_of_turn>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>",
    "   leading spaces",
    "a",
    "",
]


def main(src, out):
    result = {"texts": TEXTS, "tokenizers": {}}
    for name in sorted(os.listdir(src)):
        d = os.path.join(src, name)
        tok = AutoTokenizer.from_pretrained(d)
        entry = {"ids": [tok(t)["input_ids"] for t in TEXTS], "chats": {}}
        if tok.chat_template:
            for conv_name, (messages, tools) in CONVERSATIONS.items():
                try:
                    text = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                                   tokenize=False)
                except Exception as e:  # a template may refuse a conversation
                    entry["chats"][conv_name] = {"error": str(e)}
                    continue
                ids = tok(text, add_special_tokens=False)["input_ids"]
                entry["chats"][conv_name] = {"text": text, "ids": ids}
        result["tokenizers"][name] = entry
    with open(out, "w") as fh:
        json.dump(result, fh, ensure_ascii=False, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
