#!/usr/bin/env python3
"""Retrieval and answer evaluation of forja's RAG on the CUAD contracts.

How the question set is built (stdlib only, deterministic):
- Corpus: the contracts given as PDF in CUAD v1 (`full_contract_pdf/`, 60 contracts, one per
  contract type), ingested by `forja ingest` into one collection.
- Questions: for every contract and each category of CATEGORIES where `master_clauses.csv`
  annotates a clause for that contract, one question written from the category's description,
  in two forms: naming the contract by its title and first two parties, asked of the whole
  collection ("collection" scope), and about "the agreement", asked within that contract's file
  (`filters.source`, "contract" scope) as a user reviewing one contract would.
- Relevance: a retrieved chunk is relevant when it comes from that contract's file and holds a
  run of n consecutive words of one of the clause's annotated spans, n = min(15, words in the
  span) (lower-cased, punctuation dropped). PDF text and the annotations come from different
  extractions, so a few relevant chunks are missed by this test: recall is a lower bound.
- Retrieval metrics over all questions: recall@1/5/10 (some relevant chunk in the top k) and
  MRR@10, for BM25, vector and hybrid search, in both scopes.
- Answers: the "Governing Law" questions whose answer names a jurisdiction (redacted ones,
  `[* * *]`, are left out) are asked through `/v1/chat/completions` with the `retrieval`
  extension (hybrid, k 5, the server's other defaults), in both scopes; an answer is right when
  it names the jurisdiction of `Governing Law-Answer` (e.g. "New York", "Delaware"; any of
  several).

Usage: cuad_eval.py BASE_URL COLLECTION CUAD_DIR OUT_JSON [--answers N] [--model NAME]
"""

import argparse
import ast
import csv
import json
import os
import re
import sys
import time
import urllib.request

CATEGORIES = {
    "Governing Law": "Which state or country's law governs {c}?",
    "Expiration Date": "When does {c} expire, and how long is its initial term?",
    "Renewal Term": "Does {c} renew automatically, and for how long?",
    "Notice Period To Terminate Renewal": "How much notice stops {c} from renewing?",
    "Termination For Convenience": "Can a party terminate {c} for convenience, without cause?",
    "Anti-Assignment": "Can {c} be assigned to a third party, or does assignment need consent?",
    "Change Of Control": "What happens to {c} on a change of control or merger of a party?",
    "Cap On Liability": "Is liability under {c} capped, and at what amount?",
    "Insurance": "What insurance must a party maintain under {c}?",
    "Audit Rights": "May a party audit the books and records under {c}?",
    "Non-Compete": "Does {c} restrict a party from competing?",
    "Exclusivity": "Does {c} grant exclusive rights or require exclusive dealing?",
    "License Grant": "What license is granted under {c}?",
    "Ip Ownership Assignment": "Who owns the intellectual property created under {c}?",
    "Warranty Duration": "How long does the warranty last under {c}?",
    "Post-Termination Services": "What obligations continue after {c} ends or is terminated?",
    "Minimum Commitment": "Is there a minimum purchase or commitment under {c}?",
    "Revenue/Profit Sharing": "Do the parties share revenue or profits under {c}, and how?",
    "Liquidated Damages": "Does {c} provide for liquidated damages or termination fees?",
    "Third Party Beneficiary": "Does {c} give rights to third-party beneficiaries?",
    "Most Favored Nation": "Does {c} contain a most favored nation clause on price or terms?",
    "No-Solicit Of Employees": "Does {c} forbid soliciting or hiring the other party's employees?",
    "Rofr/Rofo/Rofn": "Does {c} give a right of first refusal, first offer or first negotiation?",
    "Covenant Not To Sue": "Does {c} include a covenant not to sue or not to challenge IP?",
}
KS = (1, 5, 10)
MODES = ("bm25", "vector", "hybrid")


def words(text):
    return re.findall(r"[a-z0-9]+", text.lower())


def grams(ws, n):
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def spans(cell):
    if not cell or cell == "[]":
        return []
    return [s for s in ast.literal_eval(cell) if words(s)]


def party_names(cell):
    names = []
    for part in cell.split(";"):
        name = part.split("(")[0].strip(" ,.\"'")
        if name and name not in names:
            names.append(name)
    return names[:2]


def contract_label(row):
    title = row["Document Name-Answer"].strip() or "the agreement"
    title = title.title() if title.isupper() else title
    parties = party_names(row["Parties-Answer"])
    if len(parties) == 2:
        return f"the {title} between {parties[0]} and {parties[1]}"
    if parties:
        return f"the {title} of {parties[0]}"
    return f"the {title}"


def build_questions(cuad_dir):
    csv.field_size_limit(1 << 30)
    with open(f"{cuad_dir}/master_clauses.csv", newline="", encoding="utf-8") as f:
        rows = {r["Filename"]: r for r in csv.DictReader(f)}
    pdfs = sorted(os.listdir(f"{cuad_dir}/full_contract_pdf"))
    questions = []
    for pdf in pdfs:
        row = rows.get(pdf)
        if row is None:
            sys.exit(f"{pdf}: not in master_clauses.csv")
        label = contract_label(row)
        for category, template in CATEGORIES.items():
            ss = spans(row.get(category, ""))
            if not ss:
                continue
            targets = []
            for s in ss:
                ws = words(s)
                n = min(15, len(ws))
                targets.append((n, grams(ws, n)))
            answer_key = next((k for k in row if k.startswith(category + "-") or
                               k.startswith(category + " -")), None)
            questions.append({
                "file": pdf,
                "category": category,
                "question": template.format(c=label),
                "generic": template.format(c="the agreement"),
                "answer": row.get(answer_key, "") if answer_key else "",
                "targets": targets,
            })
    return questions


def relevant(chunk, q):
    if not chunk["path"].endswith("/" + q["file"]) and chunk["source"] != q["file"]:
        return False
    ws = words(chunk["text"])
    have = {}
    for n, targets in q["targets"]:
        if n not in have:
            have[n] = grams(ws, n)
        if have[n] & targets:
            return True
    return False


def post(base, path, body, timeout=600):
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def retrieval(base, collection, questions):
    results = {}
    for scope in ("collection", "contract"):
        for mode in MODES:
            first = []
            for q in questions:
                body = {"query": q["question"], "k": max(KS), "mode": mode}
                if scope == "contract":
                    body["query"] = q["generic"]
                    body["filters"] = {"source": q["file"]}
                r = post(base, f"/v1/rag/collections/{collection}/search", body)
                rank = next((i + 1 for i, c in enumerate(r["data"]) if relevant(c, q)), None)
                first.append(rank)
            row = {f"recall@{k}": sum(1 for r in first if r and r <= k) / len(first) for k in KS}
            row["mrr@10"] = sum(1 / r for r in first if r) / len(first)
            results[f"{scope}/{mode}"] = row
            print(f"{scope:10s} {mode:6s} " + " ".join(f"{k} {v:.3f}" for k, v in row.items()),
                  flush=True)
            for q, r in zip(questions, first):
                q.setdefault("ranks", {})[f"{scope}/{mode}"] = r
    return results


JURISDICTION = re.compile(r"[A-Z][a-zA-Z.]+(?: [A-Z][a-zA-Z.]+)*")


def answers(base, collection, model, questions, limit, scope):
    asked = [q for q in questions if q["category"] == "Governing Law"
             and re.search(r"[A-Za-z]", q["answer"]) and "*" not in q["answer"]]
    asked = asked[:limit]
    right = 0
    out = []
    for q in asked:
        t = time.perf_counter()
        retrieval = {"collection": collection, "k": 5}
        question = q["question"]
        if scope == "contract":
            retrieval["filters"] = {"source": q["file"]}
            question = q["generic"]
        r = post(base, "/v1/chat/completions", {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 160,
            "temperature": 0,
            "retrieval": retrieval,
        })
        text = r["choices"][0]["message"]["content"] or ""
        expected = [p.strip() for p in re.split(r";|/|,| and ", q["answer"]) if p.strip()]
        ok = any(e.lower() in text.lower() for e in expected)
        right += ok
        cited = [c["source"] == q["file"] for c in r.get("citations") or []]
        out.append({"question": question, "expected": q["answer"], "answer": text,
                    "correct": ok, "cited_contract": any(cited),
                    "seconds": round(time.perf_counter() - t, 2)})
        print(f"{scope:10s} {'ok ' if ok else 'NO '} {q['answer']!r:30} {text[:90]!r}",
              flush=True)
    return {"asked": len(asked), "correct": right,
            "accuracy": right / len(asked) if asked else 0.0,
            "cited_the_contract": sum(o["cited_contract"] for o in out) / max(1, len(out)),
            "items": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("collection")
    ap.add_argument("cuad_dir")
    ap.add_argument("out")
    ap.add_argument("--answers", type=int, default=0)
    ap.add_argument("--model", default="")
    ap.add_argument("--chunks", help="every stored chunk (path, text) as JSON")
    a = ap.parse_args()
    questions = build_questions(a.cuad_dir)
    per_cat = {}
    for q in questions:
        per_cat[q["category"]] = per_cat.get(q["category"], 0) + 1
    print(f"{len(questions)} questions over {len({q['file'] for q in questions})} contracts",
          flush=True)
    report = {"questions": len(questions), "per_category": per_cat}
    if a.chunks:
        # Questions with at least one relevant chunk in the store: the best any ranking can do.
        with open(a.chunks, encoding="utf-8") as f:
            stored = json.load(f)
        by_file = {}
        for c in stored:
            by_file.setdefault(os.path.basename(c["path"]), []).append(
                {"path": c["path"], "source": os.path.basename(c["path"]), "text": c["text"]})
        reachable = sum(1 for q in questions
                        if any(relevant(c, q) for c in by_file.get(q["file"], [])))
        report["answerable"] = reachable / len(questions)
        print(f"{reachable} of {len(questions)} questions have a relevant chunk in the store",
              flush=True)
    report["retrieval"] = retrieval(a.base, a.collection, questions)
    by_cat = {}
    for q in questions:
        by_cat.setdefault(q["category"], []).append(q["ranks"]["collection/hybrid"])
    report["hybrid_recall@5_by_category"] = {
        c: sum(1 for r in rs if r and r <= 5) / len(rs) for c, rs in sorted(by_cat.items())}
    if a.answers:
        report["answers"] = {scope: answers(a.base, a.collection, a.model, questions, a.answers,
                                            scope)
                             for scope in ("collection", "contract")}
        for scope, r in report["answers"].items():
            print(f"answers {scope}: {r['correct']} of {r['asked']} right, the contract cited in "
                  f"{r['cited_the_contract']:.2f}", flush=True)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
