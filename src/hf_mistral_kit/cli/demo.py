"""`hf-mistral-kit demo`: the whole kit on a tiny random Mistral and Mixtral, offline, in seconds (or on --model)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import textwrap
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ..templates import list_templates, render
from .common import ExitCode, cache_dir
from .models import loading_errors, model_config, model_source, resolve

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
    from .. import Hardware

    started = time.perf_counter()
    hardware = Hardware.detect()
    if args.model:
        models = [("model", model_source(args.model))]
    else:
        print(RANDOM_WEIGHTS, flush=True)
        models = [(f"tiny {kind}", str(tiny_checkpoint(kind))) for kind in ("mistral", "mixtral")]

    _section("chat templates: one conversation, rendered by every template")
    for name in list_templates():
        print(f"--- {name}")
        print(render(CONVERSATION, name, add_generation_prompt=name == "chatml"))

    for label, source in models:
        _demo_model(label, source, hardware, args)
    print(f"\ndone in {time.perf_counter() - started:.1f} s.", flush=True)
    return ExitCode.OK


def tiny_checkpoint(kind: str) -> Path:
    """The cached tiny checkpoint of `kind`, built on first use (atomically: concurrent demos never see half of one)."""
    from .. import tiny_model

    target = cache_dir() / f"tiny-{kind}-{version('hf-mistral-kit')}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"building a tiny random {kind} in {target} (once) ...", flush=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tiny_model(kind, path=staging / "checkpoint")
        try:
            os.replace(staging / "checkpoint", target)
        except OSError:  # another process finished first: its checkpoint is as good as ours
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _demo_model(label: str, source: str, hardware: Any, args: argparse.Namespace) -> None:
    from .. import AutoModelForCausalLM, AutoTokenizer, plan_memory
    from .streaming import stream_reply, template_name

    config = model_config(source)
    _section(f"{label}: {source}")
    resolved = resolve(args.preset, config, hardware, context_length=args.context)
    print(resolved)
    plan = plan_memory(config, args.preset, context_length=args.context, hardware=hardware)
    print("memory plan:")
    print(textwrap.indent(str(plan), "  "))

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
        f"{reply.new_tokens} tokens in {reply.seconds:.2f} s: {reply.tokens_per_second:.1f} tokens/s "
        f"(prompt {reply.prompt_tokens} tokens, greedy)",
        flush=True,
    )


def _write(text: str) -> None:
    sys.stdout.write(text.replace("\n", "\n  "))
    sys.stdout.flush()


def _section(title: str) -> None:
    print(f"\n== {title}", flush=True)
