"""`hf-mistral-kit plan`: the memory plan of a model (from its config alone) under a preset, as a table."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import CLIError, ExitCode, existing_path

GiB = 2**30


def run(args: argparse.Namespace) -> int:
    from .. import Hardware, plan_memory
    from ..presets import PresetError

    path = existing_path(args.model, "Model or config")
    if path.is_dir() and not any((path / name).is_file() for name in ("config.json", "params.json")):
        raise CLIError(f"{path} has no config.json or params.json.", ExitCode.MISSING)
    hardware = _hardware(args.gpu) if args.gpu else Hardware.detect()
    try:
        plan = plan_memory(
            str(path), args.preset, context_length=args.context, batch_size=args.batch_size, hardware=hardware
        )
    except PresetError as error:
        code = ExitCode.OUT_OF_MEMORY if args.preset == "auto" else ExitCode.USAGE  # auto fails only when nothing fits
        raise CLIError(str(error), code) from None
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise CLIError(f"{path} is not a Mistral/Mixtral config: {error!r}") from None
    except (ValueError, ImportError) as error:
        raise CLIError(str(error)) from None
    if args.json:
        print(json.dumps(plan_dict(plan, hardware), indent=2))
    else:
        print(plan_table(plan, hardware))
    return ExitCode.OUT_OF_MEMORY if plan.fits is False else ExitCode.OK


def _hardware(profile: str) -> Any:
    from .. import Hardware

    try:
        return Hardware.profile(profile)
    except (KeyError, ValueError) as error:
        message = error.args[0] if error.args else profile
        raise CLIError(f"unknown GPU profile: {message}") from None


def describe_hardware(hardware: Any) -> str:
    if not hardware.cuda:
        return "CPU (no CUDA GPU)"
    capability = ".".join(map(str, hardware.compute_capability or ()))
    return f"{hardware.device_name} (compute capability {capability}, {hardware.total_memory / GiB:.1f} GiB)"


def _rows(plan: Any) -> list[tuple[str, str, int]]:
    """(json key, table label, bytes) of what the plan has: the contract's fields, then the planner's extras."""
    rows = [("weights_bytes", "weights", plan.weights_bytes), ("kv_cache_bytes", "KV cache", plan.kv_cache_bytes)]
    for key, label in (("activation_bytes", "activations (est.)"), ("overhead_bytes", "overhead (est.)")):
        if getattr(plan, key, None) is not None:
            rows.append((key, label, getattr(plan, key)))
    rows.append(("total_bytes", "total", plan.total_bytes))
    if getattr(plan, "offloaded_layers", 0):
        rows.append(("device_bytes", "on the device", plan.device_bytes))
        rows.append(("offloaded_bytes", f"offloaded ({plan.offloaded_layers} layers)", plan.offloaded_bytes))
    if getattr(plan, "available_bytes", None) is not None:
        rows.append(("available_bytes", "available", plan.available_bytes))
    return rows


def plan_table(plan: Any, hardware: Any) -> str:
    """The plan as an aligned table in GiB, with the verdict for `hardware`."""
    rows = _rows(plan)
    width = max(len(label) for _, label, _ in rows)
    lines = []
    if hasattr(plan, "parameters"):
        lines.append(
            f"{plan.model}: {plan.parameters / 1e9:.3g}B parameters, preset {plan.preset!r} ({plan.weight_format}), "
            f"{plan.context_length} tokens x batch {plan.batch_size}"
        )
    lines.append(f"{'':{width}}  {'GiB':>9}")
    lines += [f"{label:{width}}  {value / GiB:9.3f}" for _, label, value in rows]
    verdict = {True: "yes", False: "NO: predicted out of memory", None: "unknown"}[plan.fits]
    lines.append(f"{'fits':{width}}  {verdict} on {describe_hardware(hardware)}")
    return "\n".join(lines)


def plan_dict(plan: Any, hardware: Any) -> dict[str, Any]:
    data = {key: value for key, _, value in _rows(plan)}
    for attribute in ("model", "preset", "weight_format", "parameters", "context_length", "batch_size"):
        if hasattr(plan, attribute):
            data[attribute] = getattr(plan, attribute)
    return {**data, "fits": plan.fits, "hardware": describe_hardware(hardware)}
