"""`hf-mistral-kit plan`: the memory plan of a model (from its config alone) under a preset, as a table.

The verdict says where the model would run (GPU, GPU with layers offloaded to CPU RAM, or CPU), and the preset's
notes say why (fallbacks, offloading, what 'auto' skipped).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from ..planning.memory import default_context_length
from .common import CLIError, ExitCode
from .models import model_config, model_shape, model_source, out_of_memory


def run(args: argparse.Namespace) -> int:
    from ..planning.hardware import Hardware
    from ..planning.presets import DoesNotFitError, PresetError, resolve_preset, suggest_presets

    source = model_source(args.model, what="model or config")
    config = model_config(source)
    shape = model_shape(config, args.model)
    hardware = _hardware(args.gpu) if args.gpu else Hardware.detect()
    context = args.context or default_context_length(shape)
    try:
        resolved = resolve_preset(args.preset, hardware, model=shape, context_length=context, check_fit=False)
    except DoesNotFitError as error:  # 'auto': nothing fits anywhere on this machine
        raise CLIError(str(error), ExitCode.OUT_OF_MEMORY) from None
    except (PresetError, ImportError) as error:
        raise CLIError(str(error)) from None
    plan = resolved.plan_for(shape, context_length=context, batch_size=args.batch_size, hardware=hardware)
    notes = list(resolved.notes)
    if args.context is None:
        notes.append(f"memory planned for {context} tokens per sequence (the default); --context N plans for N.")
    if args.json:
        print(json.dumps({**plan_dict(plan), "notes": notes}, indent=2), flush=True)
    else:
        print(plan)
        print("\n".join(["notes:", *(f"  - {note}" for note in notes)]), flush=True)
    if plan.fits is False:
        alternatives = suggest_presets(args.preset, hardware, shape, context, args.batch_size)
        raise out_of_memory(plan, alternatives)
    return ExitCode.OK


def _hardware(profile: str) -> Any:
    from ..planning.hardware import Hardware

    try:
        return Hardware.profile(profile)
    except ValueError as error:
        raise CLIError(str(error)) from None


def plan_dict(plan: Any) -> dict[str, Any]:
    """The plan's fields and derived totals as JSON-ready data (`--json`)."""
    data = {field.name: getattr(plan, field.name) for field in dataclasses.fields(plan) if field.name != "hardware"}
    for derived in ("total_bytes", "device_bytes", "available_bytes", "fits", "placement"):
        data[derived] = getattr(plan, derived)
    data["hardware"] = plan.hardware.describe() if plan.hardware is not None else None
    return data
