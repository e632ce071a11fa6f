"""`hf-mistral-kit plan`: the memory plan of a model (from its config alone) under a preset, as a table."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from .common import CLIError, ExitCode
from .models import model_config, model_source, out_of_memory


def run(args: argparse.Namespace) -> int:
    from .. import Hardware, PresetError, plan_memory

    source = model_source(args.model)
    config = model_config(source)
    hardware = _hardware(args.gpu) if args.gpu else Hardware.detect()
    try:
        plan = plan_memory(
            config, args.preset, context_length=args.context, batch_size=args.batch_size, hardware=hardware
        )
    except PresetError as error:
        code = ExitCode.OUT_OF_MEMORY if args.preset == "auto" else ExitCode.USAGE  # auto fails only when nothing fits
        raise CLIError(str(error), code) from None
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise CLIError(f"{source} is not a Mistral/Mixtral config ({type(error).__name__}: {error}).") from None
    except (ValueError, ImportError) as error:
        raise CLIError(str(error)) from None
    print(json.dumps(plan_dict(plan), indent=2) if args.json else plan, flush=True)
    if plan.fits is False:
        raise out_of_memory(plan)
    return ExitCode.OK


def _hardware(profile: str) -> Any:
    from .. import Hardware

    try:
        return Hardware.profile(profile)
    except ValueError as error:
        raise CLIError(str(error)) from None


def plan_dict(plan: Any) -> dict[str, Any]:
    """The plan's fields and derived totals as JSON-ready data (`--json`)."""
    data = {field.name: getattr(plan, field.name) for field in dataclasses.fields(plan) if field.name != "hardware"}
    for derived in ("total_bytes", "device_bytes", "available_bytes", "fits"):
        data[derived] = getattr(plan, derived)
    data["hardware"] = plan.hardware.describe() if plan.hardware is not None else None
    return data
