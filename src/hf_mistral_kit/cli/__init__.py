"""The `hf-mistral-kit` command line (also `python -m hf_mistral_kit`).

Each subcommand lives in its own module, imported only when it runs, so `--help` and `render` stay fast (no torch).
User errors raise `CLIError` and end as one line on stderr with an `ExitCode`; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Sequence

from ..planning import DEFAULT_CONTEXT_LENGTH
from ..versions import TEMPLATES
from .common import DEFAULT_TEMPLATE, EXIT_CODE_MEANINGS, MAX_INPUT_BYTES, PROG, CLIError, ExitCode

# The exit codes each command can end with besides FAILED (a bug, any command): its --help lists these only.
_COMMON = (ExitCode.OK, ExitCode.USAGE, ExitCode.MISSING, ExitCode.OUT_OF_MEMORY)
COMMAND_EXIT_CODES = {
    "demo": (*_COMMON, ExitCode.INTERRUPTED),
    "chat": (*_COMMON, ExitCode.INTERRUPTED),
    "render": (*_COMMON, ExitCode.MISMATCH, ExitCode.INTERRUPTED),
    "doctor": (ExitCode.OK, ExitCode.USAGE, ExitCode.INTERRUPTED),
    "plan": (*_COMMON, ExitCode.INTERRUPTED),
    "convert": (*_COMMON, ExitCode.INTERRUPTED),
}
# What --context defaults to, as in load_model: the planner's default, or the model's own window where shorter.
CONTEXT = f"{DEFAULT_CONTEXT_LENGTH}, or the model's window if shorter"
REASONING_EFFORT = (
    "model settings of tokenizer v15 (Mistral Small 4): e.g. high or none (default: the tokenizer file's)"
)
EXIT_CODES = "\n".join(f"  {int(code):>3}  {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hf-mistral-kit")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Mistral, Mixtral and their fine-tunes on Hugging Face transformers: exact chat templates, "
        "native checkpoints, hardware-aware loading presets.",
        epilog=f"exit codes:\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        codes = ", ".join(f"{int(code)} {code.name.lower().replace('_', ' ')}" for code in COMMAND_EXIT_CODES[name])
        return commands.add_parser(
            name,
            help=help,
            description=description,
            epilog=f"exit codes: {codes}; 1 is a bug. `{PROG} --help` says what each means.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    demo = command(
        "demo",
        "offline demo on a tiny random Mistral and Mixtral (or --model)",
        "Build (once, cached) a tiny Mistral and a tiny Mixtral with random weights and the real Mistral tokenizers, "
        "load them through the kit's Auto classes with a preset, render a conversation in every template and stream "
        "a short reply. Cache: $HF_MISTRAL_KIT_CACHE, else $XDG_CACHE_HOME/hf-mistral-kit or ~/.cache/hf-mistral-kit.",
    )
    demo.add_argument("--model", metavar="PATH_OR_ID", help="run the demo on this checkpoint instead of the tiny ones")
    demo.add_argument("--preset", default="auto", help="loading preset (default: auto)")
    demo.add_argument("--max-new-tokens", type=_positive, default=24, metavar="N", help="reply length (default: 24)")
    demo.add_argument("--context", type=_positive, metavar="N", help=f"context for the plan (default: {CONTEXT})")

    chat = command(
        "chat",
        "interactive chat with token streaming",
        "Multi-turn chat with a model, replies streamed token by token. In a terminal: /reset clears the history, "
        "/exit (or Ctrl-D) leaves, Ctrl-C stops the current reply. When stdin is not a terminal, every input line is "
        'one user message and gets one reply; with --jsonl, lines are JSON ({"content": ...}) in and out, one line '
        'out per line in ({"event": "reset"|"exit"|"empty"} for /reset, /exit and blank lines). Replies are read '
        "back into messages: a tool call shows as one line, [tool call] name(key=value, ...), thinking between "
        "[thinking] and [/thinking]; --jsonl lines carry tool_calls and reasoning_content when the model wrote them.",
    )
    chat.add_argument("model", metavar="MODEL", help="checkpoint directory (Hugging Face or native layout) or hub id")
    chat.add_argument("--preset", default="auto", help="loading preset (default: auto)")
    chat.add_argument("--template", choices=TEMPLATES, help="chat template (default: the tokenizer's own)")
    chat.add_argument("--system", metavar="TEXT", help="system prompt")
    chat.add_argument("--max-new-tokens", type=_positive, default=512, metavar="N", help="reply length (512)")
    chat.add_argument(
        "--temperature", type=_temperature, metavar="T", help="sampling temperature, 0 for greedy (default: model's)"
    )
    chat.add_argument("--seed", type=_seed, help="random seed for sampling (0 to 2**32 - 1)")
    chat.add_argument("--jsonl", action="store_true", help="JSON lines in and out (non-interactive mode)")
    chat.add_argument("--reasoning-effort", metavar="E", help=REASONING_EFFORT)
    chat.add_argument(
        "--tools",
        metavar="FILE",
        help="tools the model may call: a JSON list of tool schemas, or a .py file whose public functions (with "
        "type hints and Google-style docstrings) are the tools. Calls show as [tool call] lines (--jsonl: tool_calls)",
    )

    render = command(
        "render",
        "render a conversation to text or tokens",
        "Render a JSON/JSONL conversation (OpenAI-style messages, tools allowed) with a chat template. JSON: a list "
        'of messages or {"messages": [...], "tools": [...]}. JSONL: one message per line, or one conversation per '
        "line. --tokens and --check use the real Mistral tokenizer of the template (v1 or v3; chatml tokenizes like "
        "Mistral-7B-OpenOrca) unless --tokenizer names one. Without --template or --tokenizer the template is "
        f"{DEFAULT_TEMPLATE} (Mistral 7B v0.1/v0.2, Mixtral 8x7B).",
    )
    render.add_argument(
        "file", metavar="FILE", help=f"conversation file, or - for stdin (at most {MAX_INPUT_BYTES // 2**20} MiB)"
    )
    which = render.add_mutually_exclusive_group()
    which.add_argument("--template", choices=TEMPLATES, help=f"template (default: {DEFAULT_TEMPLATE})")
    which.add_argument("--tokenizer", metavar="PATH", help="tokenizer file or checkpoint directory (its template)")
    render.add_argument("--tokens", action="store_true", help="print token ids and pieces instead of text")
    render.add_argument("--check", action="store_true", help="compare the ids with mistral-common's (exit 5 if not)")
    render.add_argument("--json", action="store_true", help="one JSON object per conversation (text, ids, pieces)")
    render.add_argument("--add-generation-prompt", action="store_true", help="open an assistant turn (chatml)")
    render.add_argument(
        "--continue-final-message", action="store_true", help="leave the final assistant message open (prefix)"
    )
    render.add_argument("--reasoning-effort", metavar="E", help=REASONING_EFFORT)

    doctor = command(
        "doctor",
        "library versions, devices, and which presets work here",
        "Report torch/transformers/accelerate/bitsandbytes/flash-attn versions, CUDA devices with compute capability "
        "and memory, and which loading presets are available on this machine (and why not).",
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    plan = command(
        "plan",
        "memory plan for a model, preset and context",
        "Predict weights, KV-cache and total memory of a model under a preset, from its config alone (no weights "
        "needed), and whether it fits the GPU (this machine's, or a named profile). Exits 4 when it does not fit.",
    )
    plan.add_argument("model", metavar="MODEL|CONFIG", help="checkpoint directory, config.json or params.json")
    plan.add_argument("--preset", default="auto", help="loading preset (default: auto)")
    plan.add_argument("--context", type=_positive, metavar="N", help=f"context length in tokens (default: {CONTEXT})")
    plan.add_argument("--batch-size", type=_positive, default=1, metavar="B", help="sequences at once (default: 1)")
    plan.add_argument("--gpu", metavar="PROFILE", help="plan for a named hardware profile (e.g. t4, a100-80gb, cpu)")
    plan.add_argument("--json", action="store_true", help="machine-readable output")

    convert = command(
        "convert",
        "convert a checkpoint between Hugging Face and Mistral's native layout, or to GGUF",
        "Convert SRC to DST tensor by tensor: --to native writes params.json + consolidated.safetensors, --to hf "
        "writes config.json + model.safetensors (tokenizer files are carried over), --to gguf writes one llama.cpp "
        "file DST.gguf (weights in --dtype, tokenizer and chat template included).",
    )
    convert.add_argument("src", metavar="SRC", help="checkpoint directory")
    convert.add_argument("dst", metavar="DST", help="output directory (must not exist or be empty), or DST.gguf")
    convert.add_argument("--to", required=True, choices=("hf", "native", "gguf"), help="target format")
    convert.add_argument(
        "--dtype",
        choices=("f32", "f16", "bf16", "q8_0"),
        help="GGUF weight type (default: the checkpoint's own float type)",
    )
    return parser


# argparse's own message for a type function that raises ValueError names the function: these raise
# ArgumentTypeError, whose message argparse prints as it is.
def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def _temperature(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 (0 for greedy), got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0 (0 for greedy), got {value}")
    return number


def _seed(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**32 - 1, got {value!r}") from None
    if not 0 <= number < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**32 - 1, got {value}")
    return number


def _is_out_of_memory(error: BaseException) -> bool:
    return any(cls.__name__ == "OutOfMemoryError" for cls in type(error).__mro__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    try:
        module = importlib.import_module(f"{__name__}.{args.command}")
        return int(module.run(args))
    except CLIError as error:
        _error(args.command, str(error))
        return error.code
    except KeyboardInterrupt:
        _error(args.command, "interrupted.")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # e.g. `hf-mistral-kit render chat.json | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return ExitCode.OK
    except MemoryError:
        _error(args.command, f"out of memory (host RAM). {_out_of_memory_fix(args)}")
        return ExitCode.OUT_OF_MEMORY
    except UnicodeEncodeError as error:
        if _is_output_encoding_error(error):
            _error(
                args.command,
                f"the output holds {error.object[error.start : error.end]!a}, which this terminal's encoding "
                f"({error.encoding}) cannot show: set PYTHONIOENCODING=utf-8 (or a UTF-8 locale).",
            )
            return ExitCode.USAGE
        raise
    except Exception as error:
        if _is_out_of_memory(error):
            _error(args.command, f"out of memory: {error} {_out_of_memory_fix(args)}")
            return ExitCode.OUT_OF_MEMORY
        raise


def _out_of_memory_fix(args: argparse.Namespace) -> str:
    """What to change when a command runs out of memory: a smaller preset where the command has --preset (and did
    not just try 4bit), else what the command's input or the machine allows."""
    preset = getattr(args, "preset", None)
    if preset == "4bit":
        return "Try a shorter context or a smaller model (4bit is the smallest preset)."
    if preset is not None:
        return "Try a smaller preset (--preset 4bit) or a shorter context."
    if args.command == "render":
        return "Render a smaller input: split the file (JSONL: fewer conversations per file)."
    return "Free memory (close other programs) and run it again."


def _is_output_encoding_error(error: UnicodeEncodeError) -> bool:
    """Writing to a stdout/stderr whose encoding is not UTF-8 (inputs are checked to be valid Unicode)."""
    encodings = {(getattr(stream, "encoding", None) or "").lower() for stream in (sys.stdout, sys.stderr)}
    return error.encoding.lower() in encodings and error.encoding.lower().replace("-", "") != "utf8"


def _error(command: str, message: str) -> None:
    print(f"{PROG} {command}: error: {message}", file=sys.stderr, flush=True)
