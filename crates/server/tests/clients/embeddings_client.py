"""The official OpenAI and Ollama Python clients asking a live forja server for embeddings.
Usage: embeddings_client.py BASE_URL MODEL. The OpenAI client asks for base64 by default and
decodes it itself. Prints one JSON object of the vectors each route returned; any failed check
raises."""
import json
import sys

import ollama
import openai

base, model = sys.argv[1], sys.argv[2]
texts = ["A man is eating food.", "The stock market fell sharply after the interest rate announcement."]
seen = {}

client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
r = client.embeddings.create(model=model, input=texts)
assert r.object == "list" and r.model == model, r
assert [d.index for d in r.data] == [0, 1], r
assert r.usage.prompt_tokens == r.usage.total_tokens > 0, r.usage
seen["openai"] = [d.embedding for d in r.data]
r = client.embeddings.create(model=model, input=texts[0], encoding_format="float")
seen["openai_float"] = r.data[0].embedding
try:
    client.embeddings.create(model=model, input="x", dimensions=8)
    raise AssertionError("dimensions=8 was accepted")
except openai.BadRequestError as e:
    assert "384" in str(e), e
seen["errors"] = "ok"

oc = ollama.Client(host=base)
e = oc.embed(model=model, input=texts)
assert e.prompt_eval_count and e.prompt_eval_count > 0, e
seen["ollama"] = [list(v) for v in e.embeddings]
seen["ollama_legacy"] = list(oc.embeddings(model=model, prompt=texts[0]).embedding)
print(json.dumps(seen))
