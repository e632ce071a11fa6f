"""Turning a MODEL argument into a loaded model, with user errors mapped to exit codes before any weight is read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .common import CLIError, ExitCode

GiB = 2**30


def model_source(value: str) -> str:
    """`value` if it is an existing path or could be a Hugging Face hub id; a MISSING error otherwise."""
    path = Path(value).expanduser()
    if path.exists():
        return str(path)
    looks_like_path = path.is_absolute() or value.startswith((".", "~")) or value.count("/") > 1
    if looks_like_path or not value.strip():
        raise CLIError(
            f"model {value} does not exist (expected a local path or a Hugging Face hub id).", ExitCode.MISSING
        )
    return value


def model_config(source: str) -> Any:
    """What the planner reads: the local path itself, or a hub model's config."""
    if Path(source).exists():
        if Path(source).is_dir() and not any((Path(source) / f).is_file() for f in ("config.json", "params.json")):
            raise CLIError(f"{source} has no config.json or params.json: not a checkpoint.", ExitCode.MISSING)
        return source
    from .. import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except OSError as error:
        raise CLIError(f"cannot find model {source}: {_first_line(error)}", ExitCode.MISSING) from None


def resolve(preset: str, config: Any, hardware: Any, *, context_length: int) -> Any:
    """`resolve_preset` with its failures as CLI errors: OUT_OF_MEMORY when the plan says it does not fit."""
    from .. import PresetError, plan_memory, resolve_preset

    try:
        if preset != "auto":
            plan = plan_memory(config, preset, context_length=context_length, hardware=hardware)
            if plan.fits is False:
                raise out_of_memory(plan)
        return resolve_preset(preset, hardware, model=config, context_length=context_length)
    except PresetError as error:
        # 'auto' raises only when no preset fits anywhere on this machine.
        code = ExitCode.OUT_OF_MEMORY if preset == "auto" else ExitCode.USAGE
        raise CLIError(str(error), code) from None
    except (ImportError, ValueError) as error:
        raise CLIError(str(error)) from None


def out_of_memory(plan: Any) -> CLIError:
    """The one-line error for a plan that does not fit."""
    return CLIError(
        f"predicted out of memory: preset {plan.preset!r} needs {plan.device_bytes / GiB:.1f} GiB for "
        f"{plan.context_length} tokens x batch {plan.batch_size}, {plan.available_bytes / GiB:.1f} GiB available on "
        f"{plan.hardware.describe()}. Try --preset auto or 4bit, or a shorter context.",
        ExitCode.OUT_OF_MEMORY,
    )


@contextmanager
def loading_errors(source: str) -> Iterator[None]:
    """What loading a checkpoint raises for user mistakes (missing files, bad configs), as CLI errors."""
    try:
        yield
    except OSError as error:
        raise CLIError(f"cannot load {source}: {_first_line(error)}", ExitCode.MISSING) from None
    except (ValueError, ImportError) as error:
        raise CLIError(f"cannot load {source}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
