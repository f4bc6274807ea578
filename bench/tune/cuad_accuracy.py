#!/usr/bin/env python3
"""Accuracy of a served model on the CUAD clause dataset of cuad_dataset.py.

Usage: cuad_accuracy.py BASE_URL MODEL EVAL_JSONL --out OUT_JSON [--limit N]
                        [--max-tokens 48] [--concurrency 2] [--timeout 600] [--label TEXT]
e.g.   cuad_accuracy.py http://127.0.0.1:8080 SmolLM2-135M-Instruct.Q4_1.gguf+cuad eval.jsonl \
           --out tuned.json
MODEL is the name the server knows (`BASE+ADAPTER` for a LoRA adapter served by
`forja serve BASE --adapter ADAPTER=DIR`). Standard library only.

Each record's prompt (every message but the final assistant one) goes to
POST BASE_URL/v1/chat/completions with temperature 0 and max_tokens --max-tokens. The reply's
first line starting with `Category:` and first line starting with `Answer:` are parsed (case
and surrounding markdown `*` ignored); the expected values come from the record's final
assistant message, written the same way.

Metrics (over all records; a request that fails counts as wrong on everything):
- format: the reply has both a `Category:` and an `Answer:` line;
- category: the parsed category equals the expected one, both normalized (lower case, only
  letters and digits kept);
- answer exact: the parsed answer equals the expected one after normalization (lower case,
  punctuation dropped, articles a/an/the dropped, whitespace collapsed);
- answer loose: exact, or one normalized answer contains the other as whole words, or their
  token F1 (over normalized words) is at least 0.5; in both cases the numbers in the two must be
  the same ("1 year" passes for "successive 1 year", "successive 5 years" fails for
  "successive 1 year");
- both: category right and answer exact.
Also per category, and the answer metrics over the value categories only (those whose expected
answer is not "Yes"). OUT_JSON holds the summary and, per record, the prompt, the expected and
produced text, the parsed fields, the verdicts, the tokens used and the latency.
"""

import argparse
import concurrent.futures
import json
import re
import sys
import time
import urllib.error
import urllib.request

FIELD = re.compile(r"^[\s*_#>-]*(category|answer)[\s*_]*:[\s*_]*(.*?)[\s*_]*$", re.I | re.M)


def parse(text):
    """{"category": ..., "answer": ...} from a reply; a field missing is None."""
    out = {"category": None, "answer": None}
    for m in FIELD.finditer(text or ""):
        key = m.group(1).lower()
        if out[key] is None:
            out[key] = m.group(2).strip()
    return out


def norm_category(s):
    return re.sub(r"[^a-z0-9]", "", (s or "").lower())


def answer_words(s):
    ws = re.findall(r"[a-z0-9]+", (s or "").lower())
    return [w for w in ws if w not in ("a", "an", "the")]


def answer_verdict(expected, produced):
    e, p = answer_words(expected), answer_words(produced)
    exact = bool(e) and e == p
    if exact:
        return True, True
    if not e or not p:
        return False, False
    if {w for w in e if w.isdigit()} != {w for w in p if w.isdigit()}:
        return False, False
    es, ps = " " + " ".join(e) + " ", " " + " ".join(p) + " "
    contained = es in ps or ps in es
    common = sum(min(e.count(w), p.count(w)) for w in set(e))
    f1 = 0.0
    if common:
        prec, rec = common / len(p), common / len(e)
        f1 = 2 * prec * rec / (prec + rec)
    return False, contained or f1 >= 0.5


def ask(url, model, messages, max_tokens, timeout):
    body = json.dumps({"model": model, "messages": messages, "temperature": 0,
                       "max_tokens": max_tokens, "stream": False}).encode()
    for attempt in range(6):
        req = urllib.request.Request(url + "/v1/chat/completions", data=body,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.load(r), None
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            if e.code in (429, 503) and attempt < 5:
                time.sleep(2 ** attempt)
                continue
            return None, f"HTTP {e.code}: {detail}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            return None, f"{type(e).__name__}: {e}"
    return None, "gave up after retries"


def evaluate(i, record, a):
    messages = record["messages"]
    if not messages or messages[-1].get("role") != "assistant":
        raise SystemExit(f"record {i + 1} does not end with an assistant message")
    prompt, expected_text = messages[:-1], messages[-1]["content"]
    expected = parse(expected_text)
    meta = record.get("meta", {})
    category = meta.get("category") or expected["category"] or "?"
    start = time.perf_counter()
    reply, error = ask(a.url, a.model, prompt, a.max_tokens, a.timeout)
    latency = time.perf_counter() - start
    produced_text = ""
    usage = None
    if reply is not None:
        try:
            produced_text = reply["choices"][0]["message"].get("content") or ""
            usage = reply.get("usage")
        except (KeyError, IndexError, TypeError):
            error = f"unexpected response: {json.dumps(reply)[:300]}"
    produced = parse(produced_text)
    fmt = produced["category"] is not None and produced["answer"] is not None
    cat_ok = produced["category"] is not None and \
        norm_category(produced["category"]) == norm_category(expected["category"])
    exact, loose = answer_verdict(expected["answer"], produced["answer"])
    return {
        "index": i,
        "contract": meta.get("contract"),
        "category": category,
        "prompt": prompt,
        "expected": expected_text,
        "produced": produced_text,
        "expected_fields": expected,
        "produced_fields": produced,
        "format_ok": fmt,
        "category_ok": cat_ok,
        "answer_exact": exact,
        "answer_loose": loose,
        "both_ok": cat_ok and exact,
        "value_category": (expected["answer"] or "").strip().lower() != "yes",
        "error": error,
        "usage": usage,
        "latency_s": round(latency, 3),
    }


def rates(items):
    n = len(items)

    def r(key):
        return round(sum(x[key] for x in items) / n, 4) if n else None

    return {"n": n, "format": r("format_ok"), "category": r("category_ok"),
            "answer_exact": r("answer_exact"), "answer_loose": r("answer_loose"),
            "both": r("both_ok")}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="the server, e.g. http://127.0.0.1:8080")
    p.add_argument("model", help="model name as the server knows it (BASE or BASE+ADAPTER)")
    p.add_argument("eval", help="eval.jsonl from cuad_dataset.py")
    p.add_argument("--out", required=True, help="JSON file for the summary and every reply")
    p.add_argument("--limit", type=int, default=0, help="only the first N records (0: all)")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    p.add_argument("--timeout", type=float, default=600, help="seconds per request")
    p.add_argument("--label", default="", help="a name for this run in the output")
    a = p.parse_args()
    a.url = a.url.rstrip("/")

    with open(a.eval, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    if a.limit:
        records = records[: a.limit]
    if not records:
        sys.exit(f"no records in {a.eval}")

    start = time.perf_counter()
    done = 0
    results = [None] * len(records)
    with concurrent.futures.ThreadPoolExecutor(max(1, a.concurrency)) as pool:
        futures = {pool.submit(evaluate, i, r, a): i for i, r in enumerate(records)}
        for fut in concurrent.futures.as_completed(futures):
            res = fut.result()
            results[res["index"]] = res
            done += 1
            if done % 10 == 0 or done == len(records):
                print(f"  {done}/{len(records)} ({time.perf_counter() - start:.0f} s)",
                      file=sys.stderr)
    wall = time.perf_counter() - start

    categories = list(dict.fromkeys(r["category"] for r in results))
    per_category = {c: rates([r for r in results if r["category"] == c]) for c in categories}
    confusion = {}
    for r in results:
        got = r["produced_fields"]["category"]
        key = got if got is not None else "(none)"
        confusion.setdefault(r["category"], {}).setdefault(key, 0)
        confusion[r["category"]][key] += 1
    summary = {
        "label": a.label,
        "model": a.model,
        "url": a.url,
        "eval_file": a.eval,
        "max_tokens": a.max_tokens,
        "wall_s": round(wall, 1),
        "errors": sum(r["error"] is not None for r in results),
        "prompt_tokens": sum((r["usage"] or {}).get("prompt_tokens", 0) for r in results),
        "completion_tokens": sum((r["usage"] or {}).get("completion_tokens", 0)
                                 for r in results),
        "all": rates(results),
        "value_categories": rates([r for r in results if r["value_category"]]),
        "per_category": per_category,
        "confusion": confusion,
    }
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump({"summary": summary, "results": results}, f, indent=1, ensure_ascii=False)

    s = summary["all"]
    v = summary["value_categories"]
    print(f"{a.model}: {s['n']} records in {wall:.0f} s, {summary['errors']} errors")
    print(f"  format {s['format']:.1%}  category {s['category']:.1%}  answer exact "
          f"{s['answer_exact']:.1%}  loose {s['answer_loose']:.1%}  both {s['both']:.1%}")
    if v["n"]:
        print(f"  value categories ({v['n']}): answer exact {v['answer_exact']:.1%}  "
              f"loose {v['answer_loose']:.1%}")
    w = max(len(c) for c in categories)
    for c in categories:
        x = per_category[c]
        print(f"  {c:<{w}}  n {x['n']:>3}  format {x['format']:>6.1%}  category "
              f"{x['category']:>6.1%}  answer {x['answer_exact']:>6.1%} / {x['answer_loose']:>6.1%}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
