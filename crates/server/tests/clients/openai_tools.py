"""Tool calling through the official OpenAI Python client: a required call, a named call, the
same streamed, and a follow-up turn that carries the call and its result.
Usage: openai_tools.py BASE_URL MODEL. Prints one JSON object; any failed check raises."""
import json
import sys

import openai

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
tools = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                       "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Current time in a timezone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 30}},
                       "required": ["tz"], "additionalProperties": False}}},
]
messages = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
seen = {}

r = client.chat.completions.create(model=model, messages=messages, tools=tools,
                                   tool_choice="required", temperature=0, max_tokens=60)
choice = r.choices[0]
assert choice.finish_reason == "tool_calls", choice
call = choice.message.tool_calls[0]
assert call.type == "function" and call.id.startswith("call_")
assert call.function.name in ("get_weather", "get_time")
args = json.loads(call.function.arguments)
seen["required"] = {"name": call.function.name, "arguments": args}

r = client.chat.completions.create(
    model=model, messages=messages, tools=tools, temperature=0, max_tokens=60,
    tool_choice={"type": "function", "function": {"name": "get_time"}})
call = r.choices[0].message.tool_calls[0]
assert call.function.name == "get_time", call
assert set(json.loads(call.function.arguments)) == {"tz"}

calls = {}
finish = None
content = ""
for chunk in client.chat.completions.create(model=model, messages=messages, tools=tools,
                                            tool_choice="required", temperature=0, max_tokens=60,
                                            stream=True):
    for c in chunk.choices:
        content += c.delta.content or ""
        for tc in c.delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"name": "", "arguments": ""})
            entry["name"] += tc.function.name or ""
            entry["arguments"] += tc.function.arguments or ""
        finish = c.finish_reason or finish
assert finish == "tool_calls" and "<tool_call>" not in content, (finish, content)
assert calls[0]["name"] == seen["required"]["name"]
assert json.loads(calls[0]["arguments"]) == seen["required"]["arguments"]

follow = messages + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"temperature_c": 18, "sky": "clear"})},
]
r = client.chat.completions.create(model=model, messages=follow, tools=tools, temperature=0, max_tokens=40)
assert r.choices[0].message.content or r.choices[0].message.tool_calls
seen["follow_up"] = r.choices[0].message.content
print(json.dumps(seen))
