#!/usr/bin/env python3
"""Builds a contract-clause dataset from CUAD v1 for `forja tune`: clause text -> its category
and a short answer, as chat records, split by contract.

Usage: cuad_dataset.py --out DIR [--csv master_clauses.csv] [--seed 0] [--eval-fraction 0.2]
                       [--max-train 300] [--max-eval 80] [--max-chars 1200] [--system TEXT]
Writes DIR/train.jsonl and DIR/eval.jsonl (JSON Lines, one chat record a line) and
DIR/stats.json, and prints records per category per split. Standard library only; the output
is the same for the same CSV, options and seed.

Source: CUAD v1's `master_clauses.csv` (510 contracts; per category a column holding the
annotated clause excerpts as a Python list literal and a `<Category>-Answer` column).

Categories (10; frequent in CUAD, and rarely annotated on the same text as one another):
- value categories, whose answer is read from the clause:
  - Governing Law: the jurisdiction, from `Governing Law-Answer` ("New York",
    "Ontario, Canada"; several joined by "; " as CUAD writes them);
  - Renewal Term: the renewal period, from `Renewal Term-Answer` (CUAD's format
    "[successive] N years/months" or "perpetual"), normalized: lower case, misspellings of
    "successive" fixed, "three (3) years" -> "3 years", plural units after numbers other than 1;
- Yes/No categories, whose answer is "Yes": Anti-Assignment, Termination For Convenience,
  Audit Rights, Cap On Liability, Insurance, License Grant, Non-Compete, Revenue/Profit Sharing.
  CUAD answers "Yes" exactly where it annotates a clause, so every record of these categories
  says Yes; their task is the category. (Renewal Term's annotations are the very text of
  "Notice Period To Terminate Renewal" and "Expiration Date" in most contracts, Cap On Liability
  overlaps "Uncapped Liability", License Grant overlaps "Exclusivity", Anti-Assignment overlaps
  "Change Of Control": the second of each pair is left out. "Expiration Date" and the date
  categories are left out because their answers are computed from other parts of the contract.)

Records: one per contract and category that has a clause: the category's excerpts, each with
its whitespace collapsed and CUAD's "<omitted>" marker written " [...] ", one per line. Left out:
records longer than --max-chars characters; value records whose answer is empty or unusable
(redacted "[* * *]" or "[]" placeholders, or a Renewal Term written as two bare numbers such as
"2 5 years"); records whose text shares an excerpt with another
chosen category of the same contract (the label would be ambiguous).

Format: `{"messages": [{"role": "system", ...}?, {"role": "user", "content": INSTRUCTION +
"\\n\\n" + CLAUSE}, {"role": "assistant", "content": "Category: <name>\\nAnswer: <answer>"}],
"meta": {"contract": FILENAME, "category": NAME}}` (`forja tune` ignores `meta`). The instruction
lists the categories and the expected format, so the base model can attempt the task too.

Split: by contract. The contracts (Filename) are shuffled with the seed and --eval-fraction of
them are held out: eval.jsonl holds only records of held-out contracts. Each split is then cut
to --max-train / --max-eval records, balanced across categories (round robin over the
categories, each category's records in seeded random order), and shuffled.
"""

import argparse
import ast
import csv
import json
import os
import random
import re
import sys

VALUE_CATEGORIES = ("Governing Law", "Renewal Term")
YES_CATEGORIES = (
    "Anti-Assignment",
    "Termination For Convenience",
    "Audit Rights",
    "Cap On Liability",
    "Insurance",
    "License Grant",
    "Non-Compete",
    "Revenue/Profit Sharing",
)
CATEGORIES = VALUE_CATEGORIES + YES_CATEGORIES

INSTRUCTION = (
    "Classify this contract clause into one of these categories: {cats}.\n"
    "Reply with exactly two lines:\n"
    "Category: <the category>\n"
    "Answer: <for Governing Law the jurisdiction whose law governs, for Renewal Term the "
    "renewal period, for any other category Yes>"
)

NUMBER_WORDS = {
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "twelve": "12",
}


def collapse(s):
    return re.sub(r"\s+", " ", s.replace("\u200b", "").replace("\xa0", " ")).strip()


def excerpts(cell):
    """The excerpts of one CSV cell (a Python list literal), cleaned; [] when none."""
    cell = (cell or "").strip()
    if not cell or cell == "[]":
        return []
    try:
        spans = ast.literal_eval(cell)
    except (ValueError, SyntaxError):
        return []
    out = []
    for s in spans if isinstance(spans, list) else [spans]:
        s = collapse(str(s).replace("<omitted>", " [...] "))
        if s and s not in out:
            out.append(s)
    return out


def unusable(answer):
    return not answer or "[]" in answer or "[*" in answer or "* *" in answer


def governing_law(raw):
    a = collapse(raw).strip(" ;,.")
    a = re.sub(r"\s*;\s*", "; ", a)
    a = re.sub(r",(?=\S)", ", ", a)
    if a.isupper():
        a = " ".join(w.capitalize() for w in a.split(" "))
    return None if unusable(a) else a


def renewal_term(raw):
    a = collapse(raw).strip(" ;,.").lower()
    # Redacted, or two bare numbers in a row ("2 5 years", "10 1 years"): unclear what is meant.
    if unusable(a) or re.search(r"\b\d+ \d+\b", a):
        return None
    a = re.sub(r"\bsu\w*ss?i\w*ve\b|\bsuc+es+ive\b|\bsuccsive\b|\bsuccesive\b|\bsuccessine\b",
               "successive", a)
    # "three (3) years" -> "3 years"
    a = re.sub(r"\b([a-z]+) \((\d+)\)", lambda m: m.group(2), a)
    a = re.sub(r"\b(" + "|".join(NUMBER_WORDS) + r")\b(?= (?:year|month|week|day))",
               lambda m: NUMBER_WORDS[m.group(1)], a)

    def unit(m):
        n, u = m.group(1), m.group(2)
        return f"{n} {u}" + ("" if n == "1" else "s")

    a = re.sub(r"\b(\d+(?:\.\d+)?) (year|month|week|day)s?\b", unit, a)
    a = re.sub(r"\s*;\s*", "; ", a).strip(" ;")
    return a or None


def answer_for(category, raw):
    if category == "Governing Law":
        return governing_law(raw)
    if category == "Renewal Term":
        return renewal_term(raw)
    return "Yes"


def answer_column(row, category):
    for key in (f"{category}-Answer", f"{category}- Answer"):
        if key in row:
            return row[key]
    raise KeyError(f"no answer column for {category!r}")


def build(rows, categories, max_chars):
    """All usable records, with counts of what was left out and why."""
    records, left_out = [], {"too_long": 0, "no_answer": 0, "ambiguous": 0}
    for row in rows:
        contract = row["Filename"]
        found = {c: excerpts(row[c]) for c in categories}
        found = {c: s for c, s in found.items() if s}
        ambiguous = set()
        for c in found:
            for d in found:
                if c < d and set(found[c]) & set(found[d]):
                    ambiguous.update((c, d))
        for c in categories:
            if c not in found:
                continue
            if c in ambiguous:
                left_out["ambiguous"] += 1
                continue
            text = "\n".join(found[c])
            if len(text) > max_chars:
                left_out["too_long"] += 1
                continue
            answer = answer_for(c, answer_column(row, c))
            if answer is None:
                left_out["no_answer"] += 1
                continue
            records.append({"contract": contract, "category": c, "text": text,
                            "answer": answer})
    return records, left_out


def balanced(records, limit, categories, rng):
    """At most `limit` records, taken round robin over the categories (each in random order)."""
    pools = {c: [r for r in records if r["category"] == c] for c in categories}
    for c in categories:
        rng.shuffle(pools[c])
    chosen, i = [], 0
    while len(chosen) < limit and any(pools.values()):
        c = categories[i % len(categories)]
        if pools[c]:
            chosen.append(pools[c].pop())
        i += 1
    rng.shuffle(chosen)
    return chosen


def chat(record, instruction, system):
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": f"{instruction}\n\n{record['text']}"})
    messages.append({"role": "assistant",
                     "content": f"Category: {record['category']}\nAnswer: {record['answer']}"})
    return {"messages": messages,
            "meta": {"contract": record["contract"], "category": record["category"]}}


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    default_csv = os.path.join(os.environ.get("CUAD", os.path.join(root, "..", "shared", "data",
                                                                    "cuad")),
                               "master_clauses.csv")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for train.jsonl, eval.jsonl, stats.json")
    p.add_argument("--csv", default=default_csv, help="CUAD's master_clauses.csv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-fraction", type=float, default=0.2,
                   help="fraction of the contracts held out for eval.jsonl")
    p.add_argument("--max-train", type=int, default=300)
    p.add_argument("--max-eval", type=int, default=80)
    p.add_argument("--max-chars", type=int, default=1200,
                   help="longest clause text kept, in characters")
    p.add_argument("--categories", default=",".join(CATEGORIES),
                   help="comma-separated subset of: " + ", ".join(CATEGORIES))
    p.add_argument("--system", default="", help="a system message for every record (none by "
                   "default: the model's chat template decides)")
    a = p.parse_args()

    categories = tuple(c.strip() for c in a.categories.split(",") if c.strip())
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        sys.exit(f"unknown categories {unknown}; choose among {list(CATEGORIES)}")
    if not 0 < a.eval_fraction < 1:
        sys.exit("--eval-fraction must be between 0 and 1")

    csv.field_size_limit(1 << 30)
    with open(a.csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    records, left_out = build(rows, categories, a.max_chars)

    contracts = sorted({r["Filename"] for r in rows})
    rng = random.Random(a.seed)
    rng.shuffle(contracts)
    n_eval = max(1, round(len(contracts) * a.eval_fraction))
    held_out = set(contracts[:n_eval])
    pools = {
        "train": [r for r in records if r["contract"] not in held_out],
        "eval": [r for r in records if r["contract"] in held_out],
    }
    chosen = {
        "train": balanced(pools["train"], a.max_train, categories, random.Random(a.seed + 1)),
        "eval": balanced(pools["eval"], a.max_eval, categories, random.Random(a.seed + 2)),
    }

    instruction = INSTRUCTION.format(cats=", ".join(categories))
    os.makedirs(a.out, exist_ok=True)
    for split in ("train", "eval"):
        with open(os.path.join(a.out, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for r in chosen[split]:
                f.write(json.dumps(chat(r, instruction, a.system), ensure_ascii=False) + "\n")

    def chars(rs):
        return sum(len(instruction) + len(r["text"]) + len(r["category"]) + len(r["answer"]) + 20
                   for r in rs)

    train_texts = {r["text"] for r in chosen["train"]}
    stats = {
        "seed": a.seed,
        "contracts": {"train": len(contracts) - n_eval, "eval": n_eval},
        "left_out": left_out,
        "available": {s: {c: sum(r["category"] == c for r in pools[s]) for c in categories}
                      for s in pools},
        "written": {s: {c: sum(r["category"] == c for r in chosen[s]) for c in categories}
                    for s in chosen},
        "records": {s: len(chosen[s]) for s in chosen},
        "chars": {s: chars(chosen[s]) for s in chosen},
        "approx_tokens": {s: chars(chosen[s]) // 4 for s in chosen},
        "eval_texts_also_in_train": sum(r["text"] in train_texts for r in chosen["eval"]),
    }
    with open(os.path.join(a.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)

    w = max(len(c) for c in categories)
    print(f"{len(contracts)} contracts: {len(contracts) - n_eval} train, {n_eval} held out "
          f"(seed {a.seed}); {len(records)} usable records; left out: "
          + ", ".join(f"{k} {v}" for k, v in left_out.items()))
    print(f"{'category':<{w}}  {'train':>5} {'(of)':>5}  {'eval':>5} {'(of)':>5}")
    for c in categories:
        print(f"{c:<{w}}  {stats['written']['train'][c]:>5} {stats['available']['train'][c]:>5}"
              f"  {stats['written']['eval'][c]:>5} {stats['available']['eval'][c]:>5}")
    print(f"{'total':<{w}}  {len(chosen['train']):>5} {len(pools['train']):>5}"
          f"  {len(chosen['eval']):>5} {len(pools['eval']):>5}")
    print(f"~{stats['approx_tokens']['train']} train tokens, ~{stats['approx_tokens']['eval']} "
          f"eval tokens (chars / 4, instruction included); {stats['eval_texts_also_in_train']} "
          f"eval clause texts also occur verbatim in train")
    print(f"wrote {a.out}/train.jsonl, eval.jsonl, stats.json")


if __name__ == "__main__":
    main()
