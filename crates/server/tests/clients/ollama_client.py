"""The official Ollama Python client against a live forja server: chat (streamed and not),
generate, list, show, ps, version, and a missing model. Usage: ollama_client.py BASE_URL MODEL.
Prints one JSON object of what it saw; any failed check raises."""
import json
import sys
import urllib.request

import ollama

base, model = sys.argv[1], sys.argv[2]
client = ollama.Client(host=base)
seen = {}

# The client has no call for /api/version; read it directly.
with urllib.request.urlopen(f"{base}/api/version") as resp:
    seen["version"] = json.load(resp)["version"]
listed = client.list()
assert [m.model for m in listed.models] == [model], listed
assert listed.models[0].details.family, listed
assert listed.models[0].size > 0
seen["family"] = listed.models[0].details.family

msgs = [{"role": "user", "content": "What is the capital of France?"}]
opts = {"temperature": 0, "num_predict": 10, "seed": 3}
r = client.chat(model=model, messages=msgs, options=opts)
assert r.done and r.done_reason in ("stop", "length"), r
assert r.message.role == "assistant"
assert r.eval_count is not None and 0 < r.eval_count <= 10
assert r.prompt_eval_count and r.prompt_eval_count > 0
seen["chat"] = r.message.content

parts = []
last = None
for part in client.chat(model=model, messages=msgs, options=opts, stream=True):
    parts.append(part.message.content)
    last = part
assert last.done and last.eval_count == r.eval_count, last
assert "".join(parts) == seen["chat"], (parts, seen["chat"])

g = client.generate(model=model, prompt="What is the capital of France?", options=opts)
assert g.done and g.response == seen["chat"], (g.response, seen["chat"])
assert g.context and len(g.context) == g.prompt_eval_count + g.eval_count
raw = client.generate(model=model, prompt="The capital of France is", raw=True, options=opts)
assert raw.done and raw.response
seen["generate_raw"] = raw.response

schema = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 30}},
    "required": ["answer"],
    "additionalProperties": False,
}
js = client.chat(model=model, messages=msgs, format=schema, options={"temperature": 0, "num_predict": 40})
seen["format"] = json.loads(js.message.content)
assert list(seen["format"]) == ["answer"], seen["format"]

show = client.show(model)
assert show.template and "{{" in show.template or "{%" in show.template
assert show.details.family == seen["family"]
ps = client.ps()
assert [m.model for m in ps.models] == [model]

try:
    client.chat(model="no-such-model", messages=msgs)
    raise AssertionError("an unknown model was accepted")
except ollama.ResponseError as e:
    assert e.status_code == 404 and "no-such-model" in e.error, e
seen["errors"] = "ok"
print(json.dumps(seen))
