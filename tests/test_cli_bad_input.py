"""issue 10: a corpus of bad input (files, flags, configs, checkpoints, environment) driven through every subcommand.

Each case must end as a user error (or a success), never as a traceback nor exit code 1 (reserved for bugs): one
line on stderr, starting with the command's name, saying what is wrong and how to fix it, with the documented exit
code. Cases run in this process (the same `main()` the console script calls), so an unexpected exception fails the
test with its traceback; a few also run through the real console script.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGUFValueType

import hf_mistral_kit as kit
from chats import deep_value
from gguf_files import ARRAY, FLOAT32, INT32, NO_VOCABULARY, STRING, rewrite, with_vocabulary
from hf_mistral_kit.chat.limits import MAX_NESTING, recursion_room
from hf_mistral_kit.cli import ExitCode, main
from hf_mistral_kit.cli.common import MAX_INPUT_BYTES
from reference_configs import MISTRAL_7B, MIXTRAL_8X7B
from tekken_files import BACKTRACKS, CRAFTED, crafted

SCRIPT = Path(sys.executable).with_name("hf-mistral-kit")
OK, USAGE, MISSING, OOM = ExitCode.OK, ExitCode.USAGE, ExitCode.MISSING, ExitCode.OUT_OF_MEMORY
CONV = [{"role": "user", "content": "hi"}]
HUB_ID = "mistralai/Mistral-7B-Instruct-v0.2"


# --- the corpus: files and checkpoints, built once ---------------------------------------------------------------


def _edit_header(src: Path, dst: Path, edit) -> None:
    """`dst` = `src` with its safetensors header replaced by `edit(header dict)` (a dict, or raw bytes)."""
    data = src.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = edit(json.loads(data[8 : 8 + size]))
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + size :])


def _first_tensor(header: dict) -> str:
    return next(name for name in header if name != "__metadata__")


GGUF_EDITS = {
    "layers-float": {"llama.block_count": (2.5, FLOAT32)},
    "layers-string": {"llama.block_count": ("2", STRING)},
    "layers-array": {"llama.block_count": ([2, 2], ARRAY, INT32)},
    "eps-nan": {"llama.attention.layer_norm_rms_epsilon": (float("nan"), FLOAT32)},
    "freq-base-inf": {"llama.rope.freq_base": (float("inf"), FLOAT32)},
    "context-2**63": {"llama.context_length": (2**63, GGUFValueType.UINT64)},
    "bos-string": {"tokenizer.ggml.bos_token_id": ("1", STRING)},
}
HEADER_EDITS = {
    "header-list": lambda header: json.dumps(list(header)).encode(),
    "header-utf8": lambda header: b'{"\xff": 1}',
    "dtype-u16": lambda header: {**header, _first_tensor(header): {**header[_first_tensor(header)], "dtype": "U16"}},
    "string-offsets": lambda header: {
        **header,
        _first_tensor(header): {
            **header[_first_tensor(header)],
            "data_offsets": [str(n) for n in header[_first_tensor(header)]["data_offsets"]],
        },
    },
}
PARAMS_EDITS = {
    "layers-1e6": {"n_layers": 1_000_000},
    "layers-1e7": {"n_layers": 1e7},
    "experts-1e9": {"moe": {"num_experts": 1_000_000_000, "num_experts_per_tok": 2}},
    "eps-nan": {"norm_eps": float("nan")},
    "rope-negative": {"rope_theta": -1e6},
    "seq-negative": {"max_seq_len": -1},
    "window-negative": {"sliding_window": -5},
    "per-token-over-experts": {"moe": {"num_experts": 4, "num_experts_per_tok": 8}},
    "moe-string": {"moe": "4"},
}
CONFIG_EDITS = {
    "heads-zero": {"num_attention_heads": 0},
    "layers-negative": {"num_hidden_layers": -32},
    "llama": {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
    "eps-nan": {"rms_norm_eps": float("nan")},
    "window-negative": {"sliding_window": -5},
}


def _checkpoint_copy(source: Path, target: Path) -> Path:
    """A copy of `source` to damage: weights linked (read only), everything else copied."""
    target.mkdir()
    for file in source.iterdir():
        if file.suffix == ".safetensors":
            (target / file.name).symlink_to(file)
        else:
            shutil.copyfile(file, target / file.name)
    return target


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("corpus")
    paths: dict[str, str] = {}

    def file(name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        paths[name] = str(root / name)

    file("conv.json", json.dumps(CONV).encode())
    file("latin1.json", '[{"role": "user", "content": "café"}]'.encode("latin-1"))
    file("utf16.json", json.dumps(CONV).encode("utf-16"))
    file("binary.json", bytes(range(256)) * 4)
    file("surrogate.json", b'[{"role": "user", "content": "\\ud800"}]')
    file("tool-calls-null.json", b'[{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [null]}]')
    file("deep.json", b"[" * 100_000 + b"]" * 100_000)
    file("tools-not-list.json", json.dumps({"messages": CONV, "tools": {"name": "f"}}).encode())
    file("column.jsonl", b'{"role": "user", "content": "a"}\n{"role": "user" "content": "b"}\n')
    file("tokenizer.model", bytes(range(256)))
    file("a-file", b"not a directory")
    # issue 19: input bounds, deep tool schemas, huge text, crafted tekken files
    (root / "huge.jsonl").write_bytes(b'{"role": "user", "content": "a"}\n')
    os.truncate(root / "huge.jsonl", MAX_INPUT_BYTES + 1)  # sparse: costs no disk
    paths["huge.jsonl"] = str(root / "huge.jsonl")
    for levels in (MAX_NESTING, 2000):
        tools = [{"type": "function", "function": {"name": "f", "parameters": deep_value(levels)}}]
        with recursion_room():
            file(f"schema-{levels}.json", json.dumps({"messages": CONV, "tools": tools}).encode())
    file("private-use.json", json.dumps([{"role": "user", "content": "\ue000" * 10_000_000}]).encode())
    file("backtracks.json", json.dumps([{"role": "user", "content": BACKTRACKS}]).encode())
    gguf = kit.convert_checkpoint(kit.tiny_model("mistral"), root / "tiny.gguf", to="gguf")
    for name, fields in GGUF_EDITS.items():
        paths[f"gguf-{name}"] = str(
            rewrite(gguf, root / f"gguf-{name}.gguf", set_fields=fields, drop_fields=NO_VOCABULARY)
        )
    paths["gguf-vocab-3m"] = str(with_vocabulary(gguf, root / "gguf-vocab-3m.gguf", 3_000_000))
    paths["tiny.gguf"] = str(gguf)
    for name in CRAFTED:
        paths[f"tekken_{name}.json"] = str(crafted(name, root))

    hf = kit.tiny_model("mistral", vocab_size=256)  # small weights: every broken copy is cheap
    native = kit.tiny_model("mixtral", native=True, vocab_size=256)
    for name, edit in HEADER_EDITS.items():
        for layout, source, weights in (
            ("hf", hf, "model.safetensors"),
            ("native", native, "consolidated.safetensors"),
        ):
            target = _checkpoint_copy(source, root / f"{layout}-{name}")
            (target / weights).unlink()
            _edit_header(source / weights, target / weights, edit)
            paths[f"{layout}-{name}"] = str(target)
    for layout, source, weights in (("hf", hf, "model.safetensors"), ("native", native, "consolidated.safetensors")):
        truncated = _checkpoint_copy(source, root / f"{layout}-truncated")
        (truncated / weights).unlink()
        (truncated / weights).write_bytes((source / weights).read_bytes()[:100_000])
        fifo = _checkpoint_copy(source, root / f"{layout}-fifo")
        (fifo / weights).unlink()
        os.mkfifo(fifo / weights)  # reading it would block forever
        paths[f"{layout}-truncated"], paths[f"{layout}-fifo"] = str(truncated), str(fifo)
    for name, changes in PARAMS_EDITS.items():
        target = _checkpoint_copy(native, root / f"native-{name}")
        params = {**json.loads((native / "params.json").read_text()), **changes}
        (target / "params.json").write_text(json.dumps(params))
        paths[f"native-{name}"] = str(target)
    for name, changes in CONFIG_EDITS.items():
        target = _checkpoint_copy(hf, root / f"hf-{name}")
        config = {**json.loads((hf / "config.json").read_text()), **changes}
        (target / "config.json").write_text(json.dumps(config))
        paths[f"hf-{name}"] = str(target)
    symlinked = _checkpoint_copy(native, root / "native-symlink")
    (symlinked / "tokenizer.model.v9").symlink_to(root / "a-file")  # would leak a-file into DST
    paths["native-symlink"] = str(symlinked)
    fifo_params = root / "fifo-params"
    fifo_params.mkdir()
    os.mkfifo(fifo_params / "params.json")
    paths["fifo-params"] = str(fifo_params)
    (root / "mixtral").mkdir()
    (root / "mixtral" / "config.json").write_text(json.dumps(MIXTRAL_8X7B))
    paths["mixtral"] = str(root / "mixtral")
    paths["out"] = str(root / "out-never-written")
    paths["root"] = str(root)
    return paths


# --- cases: (id, argv, expected exit code, a fragment of the one-line error) and optional stdin / environment ---

BAD_PARAMS = {
    "layers-1e6": "'n_layers' must be between 1 and 4096, got 1000000",
    "layers-1e7": "'n_layers' must be an integer, got 10000000.0",
    "experts-1e9": "'moe.num_experts' must be between 1 and 4096, got 1000000000",
    "eps-nan": "'norm_eps' must be a finite number above 0 and below 1, got nan",
    "rope-negative": "'rope_theta' must be a finite number above 0, got -1000000.0",
    "seq-negative": "'max_seq_len' must be between 1 and",
    "window-negative": "'sliding_window' must be between 1 and",
    "per-token-over-experts": "moe.num_experts_per_tok (8) cannot exceed moe.num_experts (4)",
    "moe-string": "`moe` must be an object with num_experts and num_experts_per_tok, got '4'",
}
BAD_CONFIGS = {
    "heads-zero": "'num_attention_heads' must be between 1 and",
    "layers-negative": "'num_hidden_layers' must be between 1 and 4096, got -32",
    "llama": "is a 'llama' config, not a Mistral/Mixtral one",
    "eps-nan": "'rms_norm_eps' must be a finite number above 0 and below 1, got nan",
    "window-negative": "'sliding_window' must be between 1 and",
}
BAD_WEIGHTS = {
    "header-list": "the header is a JSON list, not an object",
    "header-utf8": "'utf-8' codec can't decode byte 0xff",
    "dtype-u16": "has dtype 'U16'; the kit reads F64, F32",
    "string-offsets": "has data_offsets ['0',",
    "truncated": "is truncated or corrupted: its header describes",
    "fifo": "not a regular file",
}
NO_HUB = "is not a local directory and not in the Hugging Face cache, and HF_HUB_OFFLINE is set"
UNREACHABLE = "the Hugging Face Hub is unreachable"
CACHE_FIX = "set HF_MISTRAL_KIT_CACHE to a writable directory"


def _cases() -> list[tuple]:
    cases = [
        # render: files that are not UTF-8 JSON conversations, and tokenizers that are not tokenizers
        ("render-latin1", ["render", "{latin1.json}"], USAGE, "is not UTF-8 text: byte 0xe9 at offset 33"),
        ("render-binary", ["render", "{binary.json}"], USAGE, "binary.json is binary data, not text"),
        ("render-binary-stdin", ["render", "-"], USAGE, "<stdin> is binary data, not text", bytes(range(256))),
        ("render-utf16", ["render", "{utf16.json}"], OK, None),
        ("render-surrogate", ["render", "{surrogate.json}"], USAGE, "which is not valid Unicode (a lone surrogate"),
        ("render-tool-calls-null", ["render", "{tool-calls-null.json}"], USAGE, "tool call 1 must be an object"),
        ("render-deep", ["render", "{deep.json}"], USAGE, "nested too deeply for Python's JSON parser"),
        ("render-deep-stdin", ["render", "-"], USAGE, "nested too deeply", b'{"a":' * 50_000),
        ("render-tools-not-list", ["render", "{tools-not-list.json}"], USAGE, '"tools" must be a list'),
        # issue 19: bounded input, JSON nested as deep as mistral-common encodes it, sizes, crafted tekken files
        (
            "render-zero-stdin",
            ["render", "-"],
            USAGE,
            "<stdin> is binary data, not text (byte 0x00 at offset 0)",
            bytes(2**16),
        ),
        (
            "render-huge-file",
            ["render", "{huge.jsonl}"],
            USAGE,
            "huge.jsonl is larger than 64 MiB, the most the kit reads",
        ),
        (
            "render-jsonl-late-error",
            ["render", "-"],
            USAGE,
            "<stdin>: invalid JSON at line 5001, column 17: Expecting ',' delimiter",
            b'{"role": "user", "content": "a"}\n' * 5000 + b'{"role": "user" "content": "b"}\n',
        ),
        ("render-utf16-stdin", ["render", "-"], OK, None, json.dumps(CONV).encode("utf-16")),
        (
            "render-nul-late-stdin",
            ["render", "-"],
            USAGE,
            "<stdin> holds NUL characters",
            b'[{"role": "user", "content": "' + b"a" * 2**20 + b'\x00"}]',
        ),
        ("render-schema-deepest", ["render", "--template", "mistral_v3", f"{{schema-{MAX_NESTING}.json}}"], OK, None),
        (
            "render-schema-too-deep",
            ["render", "--template", "mistral_v3", "{schema-2000.json}"],
            USAGE,
            f"tools[0]: parameters is nested 2000 levels deep; mistral-common encodes at most {MAX_NESTING}",
        ),
        (
            "render-private-use",
            ["render", "--template", "mistral_tekken_v3", "{private-use.json}"],
            USAGE,
            "the conversation's text is more than 8,388,608 bytes of UTF-8",
        ),
        *[
            (
                f"render-tekken-{name}",
                ["render", "--tokenizer", f"{{tekken_{name}.json}}", "--tokens", "{backtracks.json}"],
                USAGE,
                message,
            )
            for name, (_, message) in CRAFTED.items()
        ],
        ("render-json-column", ["render", "{column.jsonl}"], USAGE, "line 2, column 17: Expecting ',' delimiter"),
        ("render-device", ["render", "/dev/zero"], USAGE, "is not a regular file (a device or socket)"),
        ("render-missing", ["render", "{root}/nope.json"], MISSING, "does not exist"),
        ("render-tokenizer-conv", ["render", "--tokenizer", "{conv.json}", "{conv.json}"], USAGE, "not a tokenizer"),
        (
            "render-tokenizer-garbage",
            ["render", "--tokenizer", "{tokenizer.model}", "--tokens", "{conv.json}"],
            USAGE,
            "cannot load the tokenizer",
        ),
        # issue 19: GGUF metadata typed and checked on load (plan is the command that takes a GGUF file)
        *[
            (f"plan-gguf-{name}", ["plan", f"{{gguf-{name}}}", "--context", "8"], USAGE, message)
            for name, message in {
                "layers-float": "llama.block_count is stored as a float (2.5); it must be an integer from 1 to 4096",
                "layers-string": "llama.block_count is stored as a string ('2')",
                "layers-array": "llama.block_count is stored as an array of 2 integers ([2, 2])",
                "eps-nan": "'llama.attention.layer_norm_rms_epsilon' must be a finite number above 0 and below 1",
                "freq-base-inf": "'llama.rope.freq_base' must be a finite number above 0, got inf",
                "context-2**63": "'llama.context_length' must be between 1 and 1073741824, got 9223372036854775808",
                "bos-string": "tokenizer.ggml.bos_token_id is stored as a string ('1'); it must be an integer",
                "vocab-3m": "tokenizer.ggml.tokens is an array of 3000000 entries, more than the largest vocabulary",
            }.items()
        ],
        ("plan-gguf-tiny", ["plan", "{tiny.gguf}", "--context", "8"], OK, None),
        # chat: flags, non-checkpoints, broken checkpoints and configs, the Hub, stdin
        (
            "chat-temperature-negative",
            ["chat", "{tiny}", "--temperature", "-1"],
            USAGE,
            "expected a finite number >= 0",
        ),
        ("chat-temperature-nan", ["chat", "{tiny}", "--temperature", "nan"], USAGE, "expected a finite number >= 0"),
        ("chat-temperature-word", ["chat", "{tiny}", "--temperature", "hot"], USAGE, "got 'hot'"),
        ("chat-seed-negative", ["chat", "{tiny}", "--seed", "-1"], USAGE, "expected an integer from 0 to 2**32 - 1"),
        ("chat-max-new-tokens-zero", ["chat", "{tiny}", "--max-new-tokens", "0"], USAGE, "expected a positive integer"),
        ("chat-conv-json", ["chat", "{conv.json}"], USAGE, "is a file, and not a GGUF one; MODEL is a checkpoint"),
        ("chat-a-directory-of-nothing", ["chat", "{root}"], MISSING, "has no config.json or params.json"),
        ("chat-missing-path", ["chat", "nonexist/config.json"], MISSING, "does not exist (no such file or directory)"),
        ("chat-hub-offline", ["chat", HUB_ID], MISSING, NO_HUB, b"", {"HF_HUB_OFFLINE": "1"}),
        ("chat-hub-unreachable", ["chat", HUB_ID], MISSING, UNREACHABLE, b"", {"HF_HUB_OFFLINE": None}),
        ("chat-system-surrogate", ["chat", "{tiny}", "--system", "caf\udce9"], USAGE, "--system holds '\\udce9'"),
        ("chat-stdin-not-utf8", ["chat", "{tiny}"], USAGE, "stdin line 1 is not UTF-8 text", b"caf\xe9\n"),
        ("chat-jsonl-deep", ["chat", "{tiny}", "--jsonl"], USAGE, "stdin line 1: unreadable JSON", b"[" * 100_000),
        (
            "chat-jsonl-surrogate",
            ["chat", "{tiny}", "--jsonl"],
            USAGE,
            "stdin line 1 holds '\\ud800'",
            b'{"content": "\\ud800"}\n',
        ),
        ("chat-jsonl-column", ["chat", "{tiny}", "--jsonl"], USAGE, "column 12: Expecting ':'", b'{"content" "x"}\n'),
        # plan: configs that are not Mistral configs, impossible numbers, flags, the Hub
        ("plan-conv-json", ["plan", "{conv.json}", "--context", "8"], USAGE, "holds a JSON list, not a config object"),
        ("plan-binary-config", ["plan", "{binary.json}", "--context", "8"], USAGE, "is not a readable JSON config"),
        ("plan-fifo-params", ["plan", "{fifo-params}", "--context", "8"], USAGE, "params.json is not a regular file"),
        ("plan-missing-path", ["plan", "nonexist/config.json", "--context", "8"], MISSING, "does not exist"),
        ("plan-hub-offline", ["plan", HUB_ID, "--context", "8"], MISSING, NO_HUB, b"", {"HF_HUB_OFFLINE": "1"}),
        (
            "plan-hub-unreachable",
            ["plan", HUB_ID, "--context", "8"],
            MISSING,
            UNREACHABLE,
            b"",
            {"HF_HUB_OFFLINE": None},
        ),
        (
            "plan-context-word",
            ["plan", "{mixtral}", "--context", "abc"],
            USAGE,
            "expected a positive integer, got 'abc'",
        ),
        ("plan-context-zero", ["plan", "{mixtral}", "--context", "0"], USAGE, "expected a positive integer, got 0"),
        ("plan-batch-word", ["plan", "{mixtral}", "--context", "8", "--batch-size", "x"], USAGE, "got 'x'"),
        ("plan-gpu-unknown", ["plan", "{mixtral}", "--context", "8", "--gpu", "k80"], USAGE, "unknown hardware"),
        (
            "plan-4bit-does-not-fit",
            ["plan", "{mixtral}", "--context", "4096", "--gpu", "t4", "--preset", "4bit"],
            OOM,
            "These fit: --preset auto (4bit on the CPU)",
        ),
        # demo: the environment, and --model like chat's MODEL
        ("demo-cache-in-proc", ["demo"], USAGE, CACHE_FIX, b"", {"HF_MISTRAL_KIT_CACHE": "/proc/nope"}),
        ("demo-cache-is-a-file", ["demo"], USAGE, CACHE_FIX, b"", {"HF_MISTRAL_KIT_CACHE": "{a-file}/cache"}),
        ("demo-model-conv-json", ["demo", "--model", "{conv.json}"], USAGE, "is a file, and not a GGUF one; MODEL is"),
        ("demo-model-missing", ["demo", "--model", "nonexist/config.json"], MISSING, "does not exist"),
        ("demo-model-hub-offline", ["demo", "--model", HUB_ID], MISSING, NO_HUB, b"", {"HF_HUB_OFFLINE": "1"}),
        ("demo-max-new-tokens-word", ["demo", "--max-new-tokens", "many"], USAGE, "got 'many'"),
        ("demo-preset-unknown", ["demo", "--preset", "turbo"], USAGE, "unknown preset 'turbo'"),
        # convert: non-checkpoints, broken ones, links out of SRC
        ("convert-src-file", ["convert", "{conv.json}", "{out}", "--to", "hf"], USAGE, "is not a directory"),
        ("convert-src-missing", ["convert", "{root}/nope", "{out}", "--to", "hf"], MISSING, "does not exist"),
        (
            "convert-symlink-out-of-src",
            ["convert", "{native-symlink}", "{out}", "--to", "hf"],
            USAGE,
            "tokenizer.model.v9 is a symbolic link to",
        ),
        # doctor: flags, and an environment it does not depend on
        ("doctor-bad-flag", ["doctor", "--jsn"], USAGE, "unrecognized arguments: --jsn"),
        ("doctor-cache-in-proc", ["doctor", "--json"], OK, None, b"", {"HF_MISTRAL_KIT_CACHE": "/proc/nope"}),
        ("no-such-command", ["train"], USAGE, "invalid choice: 'train'"),
    ]
    for name, message in BAD_PARAMS.items():
        cases.append((f"plan-params-{name}", ["plan", f"{{native-{name}}}", "--context", "8"], USAGE, message))
        cases.append((f"chat-params-{name}", ["chat", f"{{native-{name}}}"], USAGE, message))
        cases.append(
            (f"convert-params-{name}", ["convert", f"{{native-{name}}}", "{out}", "--to", "hf"], USAGE, message)
        )
    cases.append(("demo-model-params-eps-nan", ["demo", "--model", "{native-eps-nan}"], USAGE, BAD_PARAMS["eps-nan"]))
    for name, message in BAD_CONFIGS.items():
        cases.append((f"plan-config-{name}", ["plan", f"{{hf-{name}}}", "--context", "8"], USAGE, message))
        cases.append((f"chat-config-{name}", ["chat", f"{{hf-{name}}}"], USAGE, message))
        cases.append(
            (f"convert-config-{name}", ["convert", f"{{hf-{name}}}", "{out}", "--to", "native"], USAGE, message)
        )
    for name, message in BAD_WEIGHTS.items():
        for layout, to in (("hf", "native"), ("native", "hf")):
            cases.append((f"chat-{layout}-{name}", ["chat", f"{{{layout}-{name}}}"], USAGE, message))
            cases.append(
                (f"convert-{layout}-{name}", ["convert", f"{{{layout}-{name}}}", "{out}", "--to", to], USAGE, message)
            )
    cases.append(("demo-model-hf-truncated", ["demo", "--model", "{hf-truncated}"], USAGE, BAD_WEIGHTS["truncated"]))
    padded = [(*case, b"", None)[:6] for case in cases]  # stdin and environment are optional
    return [pytest.param(*case, id=case[0]) for case in padded]


def _resolve(value: str, paths: dict[str, str]) -> str:
    for name, path in paths.items():
        value = value.replace("{" + name + "}", path)
    return value


@pytest.fixture
def hub_unreachable(monkeypatch, tmp_path):
    """An empty Hugging Face cache and an endpoint that refuses connections, whatever this machine's network."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.mark.parametrize(("name", "argv", "code", "message", "stdin", "env"), _cases())
def test_bad_input_is_a_one_line_user_error(
    corpus, tiny_checkpoints, hub_unreachable, monkeypatch, capsys, name, argv, code, message, stdin, env
):
    paths = {**corpus, "tiny": str(tiny_checkpoints["mistral"])}
    for key, value in (env or {}).items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
            monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        else:
            monkeypatch.setenv(key, _resolve(value, paths))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    try:
        returned = main([_resolve(arg, paths) for arg in argv])
    except SystemExit as exited:  # argparse
        returned = exited.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and returned != ExitCode.FAILED
    assert returned == code, err
    assert not Path(corpus["out"]).exists()  # convert never leaves a partial DST
    if code == OK:
        return
    if name == "plan-4bit-does-not-fit":
        assert "--preset 4bit" not in err  # the preset that was just tried is no suggestion
    # One error line, the last one; before it at most argparse's usage, notes and transformers' progress bars.
    lines = err.strip().splitlines()
    if argv[0] == "chat" and stdin:  # issue 20: a bad input line gets its error (and the next lines their replies)
        assert lines[-1] == "hf-mistral-kit chat: error: 1 input line got no reply (line 1): " + (
            "its error line says why." if "--jsonl" in argv else "see the errors above."
        )
        said = (
            json.loads(out)["message"] if "--jsonl" in argv else lines[-2].removeprefix("hf-mistral-kit chat: error: ")
        )
        assert message in said, (out, err)
        lines = lines[:-2] if "--jsonl" not in argv else lines[:-1]
        assert all(line.startswith(("usage:", "note:", " ")) or "%|" in line for line in lines), err
        return
    assert lines[-1].startswith(("hf-mistral-kit ", "hf-mistral-kit: ")) and message in lines[-1], err
    assert all(line.startswith(("usage:", "note:", " ")) or "%|" in line for line in lines[:-1]), err


# --- the same through the console script: real pipes and a real terminal-less stdout -----------------------------


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["render", "-"], b'[{"role": "user", "content": "\\udcff"}]', "lone surrogate"),
        (["render", "-"], b"\x00\x01\x02binary\xff", "is binary data, not text"),
        (["chat", "x", "--temperature", "nan"], b"", "argument --temperature: expected a finite number"),
    ],
    ids=["surrogate", "binary", "temperature"],
)
def test_the_console_script_gives_the_same_one_line_errors(cli_env, args, stdin, message):
    result = subprocess.run([str(SCRIPT), *args], input=stdin, env=cli_env, capture_output=True, timeout=120)
    err = result.stderr.decode()
    assert result.returncode == USAGE and "Traceback" not in err, err
    assert message in err.strip().splitlines()[-1]


def test_a_cached_hub_model_is_used_offline_when_the_hub_is_unreachable(hub_unreachable, monkeypatch, capsys):
    """A hub id in the local cache, the Hub unreachable: a note, then the cached config (no minute of retries)."""
    import huggingface_hub.constants as constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    repo = Path(constants.HF_HUB_CACHE) / "models--mistralai--Mistral-7B-v0.1"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text(json.dumps(MISTRAL_7B))
    assert main(["plan", "mistralai/Mistral-7B-v0.1", "--context", "4096", "--gpu", "a100-80gb"]) == OK
    out, err = capsys.readouterr()
    assert err.startswith("note: the Hugging Face Hub is unreachable (") and "using the cached" in err
    assert out.startswith("mistralai/Mistral-7B-v0.1: 7.24B parameters")
    assert constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"  # for the rest of this run


def test_utf16_and_bom_files_render_like_utf8(corpus, tmp_path):
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(CONV).encode())
    for path in (corpus["utf16.json"], tmp_path / "bom.json"):
        result = subprocess.run(
            [str(SCRIPT), "render", str(path)], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0 and result.stdout == kit.render(CONV, "mistral_v1") + "\n", result.stderr


def test_the_demo_heals_a_truncated_cache(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    """The demo, after its cached tiny model was truncated: rebuilt with a note, and the demo runs."""
    cache = tmp_path / "cache"
    for path in tiny_checkpoints.values():
        shutil.copytree(path, cache / path.name)
    os.truncate(cache / tiny_checkpoints["mistral"].name / "model.safetensors", 4096)
    monkeypatch.setenv("HF_MISTRAL_KIT_CACHE", str(cache))
    assert main(["demo", "--max-new-tokens", "1"]) == OK
    out, err = capsys.readouterr()
    assert "note: the cached tiny mistral in" in err and "rebuilt it." in err and "Traceback" not in err
    assert out.count("1 tokens in") == 2 and out.rstrip().endswith("done.")


def test_the_demo_config_check_runs_on_a_valid_reference_config(tmp_path, capsys):
    """The checks do not refuse the real models: Mistral-7B and Mixtral-8x7B plan as before."""
    for config in (MISTRAL_7B, MIXTRAL_8X7B):
        (tmp_path / "config.json").write_text(json.dumps(config))
        assert main(["plan", str(tmp_path), "--context", "4096", "--gpu", "a100-80gb"]) == OK
    assert "fits" in capsys.readouterr().out
