"""The official OpenAI Python client against a live forja server: chat, streaming with usage,
completions with logprobs, model listing, and the errors the client maps to exceptions.
Usage: openai_client.py BASE_URL MODEL. Prints one JSON object of what it saw; any failed
check raises."""
import json
import sys

import openai

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="forja-test-key", max_retries=0)
seen = {}

models = client.models.list()
assert [m.id for m in models.data] == [model], models
seen["models"] = [m.id for m in models.data]

messages = [{"role": "user", "content": "What is the capital of France?"}]
r = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=10, seed=7)
assert r.object == "chat.completion"
assert r.choices[0].message.role == "assistant"
assert r.choices[0].finish_reason in ("stop", "length")
assert r.usage.completion_tokens <= 10 and r.usage.prompt_tokens > 0
seen["chat"] = r.choices[0].message.content

parts = []
usage = None
finish = None
with client.chat.completions.create(
    model=model, messages=messages, temperature=0, max_tokens=10, seed=7, stream=True,
    stream_options={"include_usage": True},
) as stream:
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
assert "".join(parts) == seen["chat"], (parts, seen["chat"])
assert usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage
assert finish == r.choices[0].finish_reason
seen["stream_chunks"] = len(parts)

r = client.chat.completions.create(
    model=model, messages=messages, temperature=0.8, max_tokens=6, n=3, seed=11,
    logprobs=True, top_logprobs=2,
)
assert [c.index for c in r.choices] == [0, 1, 2]
for c in r.choices:
    lp = c.logprobs.content
    assert len(lp) >= 1 and all(len(t.top_logprobs) == 2 for t in lp)
    assert all(t.logprob <= 0.0 for t in lp)
seen["n_choices"] = len(r.choices)

c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=1)
assert c.object == "text_completion" and len(c.choices) == 1
assert len(c.choices[0].logprobs.tokens) == c.usage.completion_tokens
seen["completion"] = c.choices[0].text

schema = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "country": {"type": "string", "maxLength": 20}},
    "required": ["city", "country"],
    "additionalProperties": False,
}
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Where is the Eiffel tower? Answer in JSON."}],
    temperature=0, max_tokens=40,
    response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}},
)
place = json.loads(r.choices[0].message.content)
assert set(place) == {"city", "country"} and all(isinstance(v, str) for v in place.values()), place
assert r.choices[0].finish_reason == "stop", r.choices[0]
seen["json_schema"] = place
try:
    client.chat.completions.create(
        model=model, messages=messages,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
    )
    raise AssertionError("an invalid schema was accepted")
except openai.BadRequestError as e:
    assert "schema" in e.message, e.message

try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body
try:
    client.chat.completions.create(model=model, messages=messages, max_tokens=10**7)
    raise AssertionError("an impossible max_tokens was accepted")
except openai.BadRequestError as e:
    assert "context" in e.message, e.message
try:
    client.chat.completions.create(model=model, messages=messages, temperature=7000)
    raise AssertionError("temperature 7000 was accepted")
except openai.BadRequestError as e:
    assert "temperature" in e.message, e.message
seen["errors"] = "ok"
print(json.dumps(seen))
