"""Calls ragvault's /v1/chat/completions with the official OpenAI Python SDK, whole and streamed, and prints
what it got as one JSON line. Run by tests/ask.rs (`openai_python_sdk_...`); needs RAGVAULT_URL and
RAGVAULT_API_KEY (a tenant key: the SDK never sees a provider key)."""
import json
import os
import sys

from openai import OpenAI

client = OpenAI(base_url=os.environ["RAGVAULT_URL"] + "/v1", api_key=os.environ["RAGVAULT_API_KEY"])
question = sys.argv[1]

whole = client.chat.completions.create(
    model="ragvault",
    messages=[{"role": "user", "content": question}],
)
parts = []
stream_usage = None
stream = client.chat.completions.create(
    model="ragvault",
    messages=[{"role": "user", "content": question}],
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.usage:
        stream_usage = chunk.usage.total_tokens

refused = None
try:
    OpenAI(base_url=os.environ["RAGVAULT_URL"] + "/v1", api_key="not-a-key").chat.completions.create(
        model="ragvault", messages=[{"role": "user", "content": question}]
    )
except Exception as e:  # the SDK's AuthenticationError
    refused = type(e).__name__

print(json.dumps({
    "content": whole.choices[0].message.content,
    "finish_reason": whole.choices[0].finish_reason,
    "usage": whole.usage.total_tokens,
    "citations": (whole.model_extra or {}).get("ragvault", {}).get("citations", []),
    "streamed": "".join(parts),
    "stream_usage": stream_usage,
    "refused": refused,
}))
