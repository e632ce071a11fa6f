"""Tool calling: the whole agent loop, the model's replies read back with `hf_mistral_kit.parse_response`.

The conversation is rendered with the tools (a plain Python function: its signature and Google-style docstring are
its schema), the model generates, `parse_response` turns the generated ids into an OpenAI-style assistant message
(`tool_calls` with the arguments as a dict), the tool runs, the assistant message and the tool's result go back into
the conversation, and the model writes its answer from that result.

Without --model the model is a tiny Mistral (tokenizer v3, as Mistral-7B-Instruct-v0.3) taught these two replies
first (`hf_mistral_kit.tiny.teach`, seconds on a CPU): random weights would write noise, and the point is that every
token below comes out of `generate` and is read back, not typed in.

    python examples/tool_calling.py                                      # tiny taught Mistral, offline
    python examples/tool_calling.py --model mistralai/Mistral-7B-Instruct-v0.3 --preset 4bit
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import hf_mistral_kit as kit
from hf_mistral_kit.tiny import teach

QUESTION = "What is the weather like in Paris?"
WEATHER = {"paris": {"sky": "sunny", "temperature_c": 18}, "oslo": {"sky": "snow", "temperature_c": -3}}


def get_weather(city: str) -> dict:
    """Get the current weather in a city.

    Args:
        city: The city's name, e.g. "Paris".
    """
    return WEATHER.get(city.strip().lower(), {"error": f"no weather known for {city!r}"})


TOOLS = [get_weather]
CALL_NUMBERS = itertools.count()  # ids for calls the model wrote none for (tokenizer v13), nine characters
FUNCTIONS = {tool.__name__: tool for tool in TOOLS}


def taught_conversation() -> list[dict[str, Any]]:
    """What the tiny model learns: the question, a call of get_weather, its result, the answer written from it."""
    call = {"id": "call00001", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    return [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call00001", "content": json.dumps(get_weather("Paris"))},
        {"role": "assistant", "content": "It is sunny in Paris: 18 degrees Celsius."},
    ]


def reply(model: Any, tokenizer: Any, messages: list[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    """One assistant turn: render with the tools, generate (greedy), read the generated ids back."""
    inputs = tokenizer.apply_chat_template(
        messages, tools=TOOLS, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    ).to(model.device)
    output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
    # The ids `generate` returns start with the prompt: parse_response leaves it out, and reads only calls of TOOLS.
    return kit.parse_response(tokenizer, output[0], inputs["input_ids"][0], tools=TOOLS)


def run_tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Run each call of the assistant message; one tool message per call, its result as JSON."""
    results = []
    for call in message["tool_calls"]:
        # v3-v11 formats write the call's id; v13 writes none: the result still needs one, unique in the chat.
        call.setdefault("id", f"call{next(CALL_NUMBERS):05d}")
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        result = FUNCTIONS[name](**arguments)
        print(f"tool call: {name}({json.dumps(arguments)}) -> {json.dumps(result)}")
        results.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory or hub id (default: a tiny Mistral taught the replies)")
    parser.add_argument("--preset", help="loading preset (default: auto; cpu for the tiny model)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory()  # holds the tiny model, if any; removed when the script ends
    path = args.model
    if path is None:
        print("No --model: teaching a tiny Mistral (tokenizer v3) the two replies of this loop ...")
        path = kit.tiny_model("mistral", path=Path(scratch.name) / "tiny-mistral", tokenizer="v3")
        teach(path, [taught_conversation()], tools=TOOLS)
    model, tokenizer = kit.load_model(path, preset=args.preset or ("auto" if args.model else "cpu"))

    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    print(f"user: {QUESTION}")
    for _ in range(4):  # a model may call tools a few times before it answers
        message = reply(model, tokenizer, messages, args.max_new_tokens)
        print(f"parse_response -> {json.dumps(message)}")
        if not message.get("tool_calls"):
            print(f"answer: {message['content']}")
            break
        messages += [message, *run_tool_calls(message)]
    else:
        print("no answer: the model still calls tools after 4 rounds")


if __name__ == "__main__":
    main()
