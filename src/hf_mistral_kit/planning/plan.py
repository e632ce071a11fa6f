"""`plan_memory`: the memory plan of a model in a preset, with or without the hardware it is resolved against."""

from __future__ import annotations

from typing import Any

from .hardware import Hardware
from .memory import MemoryPlan, ModelShape, estimate
from .presets import PRESETS, Preset, ResolvedPreset, resolve_preset

__all__ = ["plan_memory"]


def plan_memory(
    config_or_path: Any,
    preset: str | Preset | ResolvedPreset,
    *,
    context_length: int,
    batch_size: int = 1,
    hardware: Hardware | None = None,
    vision: bool = False,
) -> MemoryPlan:
    """Memory needed by a model (config, config dict, or path) in a preset, for `context_length` tokens per sequence.

    With `hardware`, the preset is resolved against it (so 'half' becomes bf16 or fp16, impossible presets raise)
    and `fits` answers; without, `fits` is None. 'auto' needs hardware, since it picks by what fits. A
    vision-language model (mistral3, mistral_large4) is planned as its text model (what a causal LM of it loads), or
    with `vision=True` as the whole model (its vision tower and projector, unquantized).
    """
    shape = ModelShape.from_config(config_or_path, vision=vision)
    if isinstance(preset, ResolvedPreset):
        return preset.plan_for(shape, context_length=context_length, batch_size=batch_size, hardware=hardware)
    name = preset.name if isinstance(preset, Preset) else preset
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    if hardware is not None:
        resolved = resolve_preset(preset, hardware, model=shape, context_length=context_length, check_fit=False)
        return resolved.plan_for(shape, context_length=context_length, batch_size=batch_size, hardware=hardware)
    static = PRESETS[name]
    if static.precision == "auto":
        raise ValueError("preset 'auto' depends on the hardware: pass hardware=Hardware.detect() (or a profile)")
    return estimate(
        shape,
        preset=name,
        weight_format=static.weight_format(),
        quantization=static.quantization,
        double_quant=static.quantization == "nf4",
        dtype_bytes=4 if static.precision == "fp32" else 2,
        context_length=context_length,
        batch_size=batch_size,
        on_cpu=static.device == "cpu",
    )
