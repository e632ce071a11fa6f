"""Chat encoding time against conversation length: the kit vs mistral-common, in one run.

Builds one long v3 conversation per size (user / assistant turns, a system message now and then, a tool call and its
result every tenth turn) and times, alternating in rounds so that a busy machine slows every contender alike:

- `kit.render(messages, "mistral_v3")`: validation + the Jinja template, text only;
- the kit tokenizer's `apply_chat_template(messages, tools=...)`: validation, escaping, template, ids;
- mistral-common's `ChatCompletionRequest.from_openai` + `MistralTokenizer.encode_chat_completion` (the reference).

Prints the medians, the kit/mistral-common ratios per size, and each contender's growth from the smallest size
(linear is about the size ratio; quadratic its square).

    python benchmarks/chat_scaling.py [--sizes 25000 50000 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def conversation(size: int) -> list[dict]:
    """About `size` messages (a few more at most), ending with a user question."""
    messages: list[dict] = []
    turn = 0
    while len(messages) < size - 1:
        messages.append({"role": "user", "content": f"Question number {turn}: what about the weather in Paris?"})
        if turn % 25 == 7:
            messages.append({"role": "system", "content": f"Note {turn}: answer briefly."})
        if turn % 10 == 3:
            call_id = f"c{turn:08d}"  # 9 letters or digits, as v3 requires
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
            messages.append({"role": "assistant", "tool_calls": [call]})
            messages.append({"role": "tool", "tool_call_id": call_id, "content": '{"temperature": 21, "unit": "C"}'})
        messages.append({"role": "assistant", "content": f"Answer {turn}: sunny, 21 degrees, light wind."})
        turn += 1
    messages.append({"role": "user", "content": "And tomorrow?"})
    return messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    import hf_mistral_kit as kit

    reference = MistralTokenizer.from_file(str(kit.reference_tokenizer_file("v3")))
    tokenizer = kit.load_tokenizer(kit.reference_tokenizer_file("v3"))

    def mistral_common(messages):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return reference.encode_chat_completion(ChatCompletionRequest.from_openai(messages, TOOLS)).tokens

    contenders = {
        "kit render (text)": lambda messages: kit.render(messages, "mistral_v3", tools=TOOLS),
        "kit apply_chat_template (ids)": lambda messages: tokenizer.apply_chat_template(messages, tools=TOOLS)[
            "input_ids"
        ],
        "mistral-common encode_chat_completion": mistral_common,
    }
    chats = {size: conversation(size) for size in args.sizes}
    small = chats[args.sizes[0]][:40]
    assert contenders["kit apply_chat_template (ids)"](small) == mistral_common(small)  # same ids, or no point

    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for size, messages in chats.items():
            for name, encode in contenders.items():
                start = time.perf_counter()
                encode(messages)
                times.setdefault((name, size), []).append(time.perf_counter() - start)

    median = {key: statistics.median(values) for key, values in times.items()}
    reference_name = "mistral-common encode_chat_completion"
    print(f"{'messages':>9} " + " ".join(f"{name:>38}" for name in contenders))
    for size in args.sizes:
        print(f"{size:>9} " + " ".join(f"{median[name, size]:>37.2f}s" for name in contenders))
    print("\nratio to mistral-common (same size, same run):")
    for size in args.sizes:
        ratios = ", ".join(
            f"{name} {median[name, size] / median[reference_name, size]:.2f}"
            for name in contenders
            if name != reference_name
        )
        print(f"  {size:>7} messages: {ratios}")
    first = args.sizes[0]
    print(f"\ngrowth from {first} messages (linear: the size ratio):")
    for size in args.sizes[1:]:
        growth = ", ".join(f"{name} {median[name, size] / median[name, first]:.2f}" for name in contenders)
        print(f"  {size / first:.0f}x messages: {growth}")


if __name__ == "__main__":
    main()
