"""Golden renderings of real chat templates by transformers (`render_jinja_template`, the code
behind `apply_chat_template`): every template in DIR rendered for a few conversations (system +
user, multi-turn, tools with a tool call and its result), with `strftime_now` fixed to
2024-07-26 so the goldens do not depend on the day. A template that raises records the error.

Usage: python chat_templates.py TEMPLATE_DIR OUT.json
"""
import datetime
import json
import os
import sys

import transformers.utils.chat_template_utils as ctu
from transformers.utils.chat_template_utils import render_jinja_template

FIXED = datetime.datetime(2024, 7, 26, 13, 25, 9)


class _FixedDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED


# transformers' strftime_now calls datetime.now(); pin it.
ctu.datetime = _FixedDatetime

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}

CONVERSATIONS = {
    "system_user": ([{"role": "system", "content": "You are a careful legal assistant."},
                     {"role": "user", "content": "¿Qué cláusulas de rescisión hay?"}], None),
    "multi_turn": ([{"role": "user", "content": "Hi!"},
                    {"role": "assistant", "content": "Hello, how can I help?"},
                    {"role": "user", "content": "Summarize clause 4."}], None),
    "tools": ([{"role": "user", "content": "What is the weather in Madrid?"},
               {"role": "assistant", "content": "",
                "tool_calls": [{"type": "function", "id": "call_1",
                                "function": {"name": "get_weather", "arguments": {"city": "Madrid"}}}]},
               {"role": "tool", "name": "get_weather", "tool_call_id": "call_1", "content": "{\"temp_c\": 21}"}],
              [WEATHER_TOOL]),
}


def main(src, out):
    result = {}
    for name in sorted(os.listdir(src)):
        if not name.endswith(".jinja"):
            continue
        template = open(os.path.join(src, name), encoding="utf-8").read()
        per = {}
        for conv_name, (messages, tools) in CONVERSATIONS.items():
            try:
                rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=template,
                                                    add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
                per[conv_name] = {"ok": rendered[0]}
            except Exception as e:  # the template's own error (raise_exception) or an unsupported feature
                per[conv_name] = {"error": f"{type(e).__name__}: {e}"}
        result[name] = per
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
