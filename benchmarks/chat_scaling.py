"""Chat encoding time against conversation length: the kit vs mistral-common, in one run.

Builds one long v3 conversation per size (user / assistant turns, a system message now and then, a tool call and its
result every tenth turn) and times, alternating in rounds so that a busy machine slows every contender alike:

- `kit.render(messages, "mistral_v3")`: validation + the Jinja template, text only;
- the kit tokenizer's `apply_chat_template(messages, tools=...)`: validation, escaping, template, ids;
- mistral-common's `ChatCompletionRequest.from_openai` + `MistralTokenizer.encode_chat_completion` (the reference).

Prints the medians, the kit/mistral-common ratios per size, and each contender's growth from the smallest size
(linear is about the size ratio; quadratic its square).

Then times the command line on the same kind of input read from a file: `hf-mistral-kit render --template mistral_v3
FILE` (its `main()`, in this process, output to /dev/null) of a JSONL file of one message per line, at each of
`--cli-lines` (default 93,750 and 375,000 lines), and prints the growth from the smallest. The messages are short
("Hi" / "Ok") so that 375,000 of them stay within the most text the kit renders as one conversation
(`hf_mistral_kit.chat.limits.MAX_CHAT_BYTES`). Reading the file must stay linear: at 4x lines, at most 5x the time.

    python benchmarks/chat_scaling.py [--sizes 25000 50000 100000] [--cli-lines 93750 375000] [--rounds 3]

`--sizes` or `--cli-lines` with no numbers skips that part.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

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


def jsonl_file(path: Path, lines: int) -> Path:
    """A conversation of `lines` messages, one per line, user and assistant in turn."""
    turns = (json.dumps({"role": "user", "content": "Hi"}), json.dumps({"role": "assistant", "content": "Ok"}))
    with path.open("w", encoding="utf-8") as file:
        for number in range(lines):
            file.write(turns[number % 2] + "\n")
    return path


def time_cli_render(sizes: list[int], rounds: int) -> None:
    """`hf-mistral-kit render` of a one-message-per-line JSONL file at each size: medians and growth."""
    from hf_mistral_kit.cli import main as cli

    def render(path: Path) -> float:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            start = time.perf_counter()
            code = cli(["render", "--template", "mistral_v3", str(path)])
            elapsed = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"render of {path.name} exited with {code}")
        return elapsed

    with tempfile.TemporaryDirectory() as folder:
        files = {size: jsonl_file(Path(folder, f"{size}.jsonl"), size) for size in sizes}
        render(jsonl_file(Path(folder, "warm-up.jsonl"), 2))  # imports, template compilation
        times: dict[int, list[float]] = {}
        for _ in range(rounds):
            for size, path in files.items():
                times.setdefault(size, []).append(render(path))
    median = {size: statistics.median(values) for size, values in times.items()}
    print(f"\nhf-mistral-kit render of a JSONL file, one message per line (median of {rounds}):")
    for size in sizes:
        print(f"  {size:>9,} lines: {median[size]:.2f}s")
    first = sizes[0]
    for size in sizes[1:]:
        print(
            f"  growth at {size / first:g}x lines: {median[size] / median[first]:.2f}x "
            f"(linear: {size / first:g}x; quadratic: {(size / first) ** 2:g}x)"
        )


def time_api(sizes: list[int], rounds: int) -> None:
    """The kit's render and apply_chat_template against mistral-common at each size."""
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
    chats = {size: conversation(size) for size in sizes}
    small = chats[sizes[0]][:40]
    assert contenders["kit apply_chat_template (ids)"](small) == mistral_common(small)  # same ids, or no point

    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for size, messages in chats.items():
            for name, encode in contenders.items():
                start = time.perf_counter()
                encode(messages)
                times.setdefault((name, size), []).append(time.perf_counter() - start)

    median = {key: statistics.median(values) for key, values in times.items()}
    reference_name = "mistral-common encode_chat_completion"
    print(f"{'messages':>9} " + " ".join(f"{name:>38}" for name in contenders))
    for size in sizes:
        print(f"{size:>9} " + " ".join(f"{median[name, size]:>37.2f}s" for name in contenders))
    print("\nratio to mistral-common (same size, same run):")
    for size in sizes:
        ratios = ", ".join(
            f"{name} {median[name, size] / median[reference_name, size]:.2f}"
            for name in contenders
            if name != reference_name
        )
        print(f"  {size:>7} messages: {ratios}")
    first = sizes[0]
    print(f"\ngrowth from {first} messages (linear: the size ratio):")
    for size in sizes[1:]:
        growth = ", ".join(f"{name} {median[name, size] / median[name, first]:.2f}" for name in contenders)
        print(f"  {size / first:.0f}x messages: {growth}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[25_000, 50_000, 100_000])
    parser.add_argument("--cli-lines", type=int, nargs="*", default=[93_750, 375_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.sizes:
        time_api(args.sizes, args.rounds)
    if args.cli_lines:
        time_cli_render(args.cli_lines, args.rounds)


if __name__ == "__main__":
    main()
