"""`hf-mistral-kit demo`: the whole kit on a tiny random Mistral and Mixtral, offline, in seconds (or on --model)."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ..chat.templates import list_templates, render
from ..versions import CHATML
from .common import CACHE_ENV, CLIError, ExitCode, cache_dir
from .models import check_weights, checkpoint_dir, loading_errors, model_config, model_shape, resolve

CONVERSATION = [
    {"role": "system", "content": "You answer in one sentence."},
    {"role": "user", "content": "What is your favourite condiment?"},
    {"role": "assistant", "content": "A squeeze of fresh lemon juice."},
    {"role": "user", "content": "Do you have mayonnaise recipes?"},
]
RANDOM_WEIGHTS = (
    "The tiny models have RANDOM weights: their replies below are noise, not answers. The demo shows the plumbing "
    "(templates, presets, memory plan, streaming); run `hf-mistral-kit demo --model PATH` on a real checkpoint."
)


def run(args: argparse.Namespace) -> int:
    from ..planning.hardware import Hardware
    from ..planning.presets import PresetError, resolve_preset

    hardware = Hardware.detect()
    try:  # a preset this machine cannot run at all fails before anything is printed or built
        resolve_preset(args.preset, hardware)
    except (PresetError, ImportError) as error:
        raise CLIError(str(error)) from None
    if args.model:
        models = [("model", checkpoint_dir(args.model))]
    else:
        print(RANDOM_WEIGHTS, flush=True)
        models = [(f"tiny {kind}", str(tiny_checkpoint(kind))) for kind in ("mistral", "mixtral")]

    _section("chat templates: one conversation, rendered by every template")
    for name in list_templates():
        print(f"--- {name}")
        print(render(CONVERSATION, name, add_generation_prompt=name == CHATML))

    for label, source in models:
        _demo_model(label, source, hardware, args)
    print("\ndone.", flush=True)
    return ExitCode.OK


def tiny_checkpoint(kind: str, root: Path | None = None) -> Path:
    """The cached tiny checkpoint of `kind` under `root` (default: the kit's cache dir), built on first use.

    They carry `tiny_model`'s default tokenizers (`tiny.DEFAULT_TOKENIZERS`: one per kind), so the demo shows two
    Mistral templates at work.
    """
    from ..tiny import tiny_model

    target = (root or cache_dir()) / f"tiny-{kind}-{version('hf-mistral-kit')}"
    if not target.exists():
        print(f"building a tiny random {kind} in {_shown(target)} (once) ...", flush=True)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CLIError(
            f"cannot create the demo's cache directory {target.parent} ({error.strerror or error}): set "
            f"{CACHE_ENV} to a writable directory.",
        ) from None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = tiny_model(kind, path=target)
    except FileExistsError:
        raise CLIError(f"{target} holds something else than the demo's tiny {kind}; delete it.") from None
    except OSError as error:
        raise CLIError(
            f"cannot build the demo's tiny {kind} in {target.parent} ({error.strerror or error}): set {CACHE_ENV} to "
            "a writable directory with some free space (about 40 MB).",
        ) from None
    for warning in caught:  # a damaged cache rebuilt, a stale staging directory removed
        print(f"note: {warning.message}", file=sys.stderr, flush=True)
    return path


def _demo_model(label: str, source: str, hardware: Any, args: argparse.Namespace) -> None:
    from ..auto import AutoModelForCausalLM, AutoTokenizer
    from ..planning.memory import default_context_length
    from ..planning.plan import plan_memory
    from .streaming import stream_reply, template_name

    shape = model_shape(model_config(source), Path(source).name if Path(source).exists() else source)
    _section(f"{label}: {_shown(source)}")
    context = args.context or default_context_length(shape)
    resolved = resolve(args.preset, shape, hardware, context_length=context)
    print(resolved)
    plan = plan_memory(shape, args.preset, context_length=context, hardware=hardware)
    print("memory plan:")
    print(textwrap.indent(str(plan), "  "))

    check_weights(source)
    with loading_errors(source):
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(source, preset=args.preset)
        tokenizer = AutoTokenizer.from_pretrained(source)
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"loaded {type(model).__name__} ({parameters / 1e6:.1f}M parameters, {model.dtype}, {model.device}) "
        f"in {time.perf_counter() - start:.1f} s; template {template_name(tokenizer)}"
    )
    print(f"reply to {CONVERSATION[-1]['content']!r}, streamed:")
    print("  ", end="", flush=True)
    reply = stream_reply(model, tokenizer, CONVERSATION, _write, max_new_tokens=args.max_new_tokens, temperature=0)
    print()
    print(
        f"{reply.new_tokens} tokens in {reply.seconds:.2f} s: first after {reply.first_token_seconds:.2f} s "
        f"(prompt {reply.prompt_tokens} tokens), then {reply.tokens_per_second:.1f} tokens/s (greedy)",
        flush=True,
    )


def _write(text: str) -> None:
    sys.stdout.write(text.replace("\n", "\n  "))
    sys.stdout.flush()


def _shown(path: str | Path) -> str:
    """`path` with the home directory written as ~."""
    home, text = str(Path.home()), str(path)
    return "~" + text[len(home) :] if text.startswith(home + "/") else text


def _section(title: str) -> None:
    print(f"\n== {title}", flush=True)
