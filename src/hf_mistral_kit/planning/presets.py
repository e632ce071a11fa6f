"""Loading presets: one word for dtype, quantization, attention and placement, resolved against the hardware.

`resolve_preset("auto")` picks the fastest configuration that fits, in this order:
half precision (bf16 where the GPU has it, else fp16) with Flash Attention 2 where it works, else SDPA ->
4-bit NF4 -> 4-bit with the overflow layers offloaded to CPU RAM -> half precision offloaded -> CPU.
LLM.int8 (`8bit`) is never picked automatically: it is slower than both fp16 and NF4 (outlier decomposition on
every matmul) while NF4 is smaller; it stays available explicitly for its near-lossless quality.
Explicit presets never change precision behind your back: impossible requests raise with the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from ..architectures import find_architecture, find_text_model_architecture
from .hardware import BITSANDBYTES_MIN_VERSION, FLASH_ATTN_MIN_VERSION, GiB, Hardware
from .memory import CPU_OVERHEAD_BYTES, MemoryPlan, ModelShape, default_context_length, estimate

__all__ = ["PRESETS", "DoesNotFitError", "Preset", "PresetError", "ResolvedPreset", "resolve_preset"]


class PresetError(ValueError):
    """A preset that cannot work on this hardware or does not fit; the message names the fix."""


class DoesNotFitError(PresetError):
    """The memory plan says the model does not fit: in the explicit preset asked for, or (for 'auto') in any."""


@dataclass(frozen=True)
class Preset:
    """A loading recipe before it meets the hardware.

    precision: "half" (bf16 where the device has it, else fp16), "bf16", "fp16", "fp32", or "auto".
    quantization: None, "nf4" (bitsandbytes 4-bit with double quantization) or "int8" (LLM.int8).
    attention: "best" (flash_attention_2 where it works, else sdpa), "flash_attention_2" or "sdpa".
    device: "auto" (the GPU when there is one) or "cpu".
    """

    name: str
    precision: str
    quantization: str | None = None
    attention: str = "best"
    device: str = "auto"
    description: str = ""

    def weight_format(self) -> str:
        """How weights are stored, before the hardware decides between bf16 and fp16."""
        return _weight_format(self.quantization, _PRECISION_NAMES[self.precision])


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("fp16", "fp16", description="float16 weights and math: the half precision of pre-Ampere GPUs (T4)."),
        Preset("bf16", "bf16", description="bfloat16, the dtype Mistral was trained in; needs Ampere or newer."),
        Preset("8bit", "half", "int8", description="LLM.int8: half of fp16's memory, near-lossless, several x slower."),
        Preset("4bit", "half", "nf4", description="NF4 + double quant, bf16 compute where supported: QLoRA's setting."),
        Preset("fa2", "half", attention="flash_attention_2", description="Half precision + Flash Attention 2."),
        Preset("sdpa", "half", attention="sdpa", description="Half precision + PyTorch scaled_dot_product_attention."),
        Preset("cpu", "fp32", attention="sdpa", device="cpu", description="float32 on the CPU."),
        Preset("auto", "auto", description="The fastest of the above that fits this machine."),
    )
}


@dataclass(frozen=True)
class ResolvedPreset:
    """A preset made concrete for one machine. `kwargs` go straight to `from_pretrained`; `notes` say why."""

    name: str
    preset: Preset
    kwargs: dict[str, Any]
    notes: list[str]
    dtype: torch.dtype
    attn_implementation: str
    device: str
    hardware: Hardware
    offload: bool = False
    plan: MemoryPlan | None = field(default=None, compare=False)

    @property
    def quantization(self) -> str | None:
        return self.preset.quantization

    @property
    def weight_format(self) -> str:
        return _weight_format(self.quantization, _DTYPE_NAMES[self.dtype])

    def plan_for(
        self, model: Any, *, context_length: int, batch_size: int = 1, hardware: Hardware | None = None
    ) -> MemoryPlan:
        """The memory plan of `model` loaded with these kwargs."""
        return estimate(
            ModelShape.from_config(model),
            preset=self.name if self.name == self.preset.name else f"{self.name} -> {self.preset.name}",
            weight_format=self.weight_format,
            quantization=self.quantization,
            double_quant=self.quantization == "nf4",
            dtype_bytes=self.dtype.itemsize,
            context_length=context_length,
            batch_size=batch_size,
            hardware=hardware,
            on_cpu=self.device == "cpu",
            offload=self.offload,
        )

    def __str__(self) -> str:
        chosen = self.preset.name + (" + CPU offload" if self.offload else "")
        header = f"preset {self.name!r}" + (f" -> {chosen!r}" if chosen != self.name else "")
        lines = [f"{header} on {self.hardware.describe()}", f"  from_pretrained kwargs: {_kwargs_summary(self.kwargs)}"]
        lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)


def resolve_preset(
    name: str | Preset,
    hardware: Hardware | None = None,
    *,
    model: Any = None,
    context_length: int | None = None,
    check_fit: bool = True,
    vision: bool | None = None,
) -> ResolvedPreset:
    """Turn a preset name into `from_pretrained` kwargs for `hardware` (default: `Hardware.detect()`).

    `model` (a config, config dict, or path to a checkpoint/config.json/params.json) enables memory planning for
    `context_length` tokens (default: `memory.default_context_length`): 'auto' then picks the fastest preset that
    fits, and an explicit preset that does not fit raises (unless `check_fit=False`, e.g. when you pass your own
    `device_map`). A vision-language `model` is planned as the kit's `AutoModelForCausalLM` loads it (`vision=None`:
    the text model of mistral3, the whole Large line), or whole with `vision=True` (`AutoModelForImageTextToText`).
    Raises `PresetError` for requests the hardware cannot do and `ImportError` when a needed package is missing.
    """
    preset = _lookup(name)
    hardware = hardware if hardware is not None else Hardware.detect()
    shape = None if model is None else ModelShape.from_config(model, vision=vision)
    notes = []
    if shape is not None and context_length is None:
        context_length = default_context_length(shape)
        notes.append(f"memory planned for {context_length} tokens per sequence; pass context_length= for longer ones.")
    if preset.precision == "auto":
        resolved = _resolve_auto(hardware, shape, context_length)
    else:
        resolved = _resolve(preset, hardware, shape, context_length)
        if check_fit and resolved.plan is not None and not resolved.plan.fits:
            raise DoesNotFitError(_does_not_fit(resolved, shape, context_length))
    return dataclasses.replace(resolved, notes=notes + resolved.notes)


def _lookup(name: str | Preset) -> Preset:
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; choose one of {', '.join(map(repr, PRESETS))}") from None


def _resolve(
    preset: Preset,
    hardware: Hardware,
    shape: ModelShape | None,
    context_length: int | None,
    *,
    requested: str | None = None,
    offload: bool = False,
) -> ResolvedPreset:
    """One concrete preset on one machine: raises for what cannot work, notes every fallback or choice."""
    name = requested or preset.name
    on_gpu = hardware.cuda and preset.device != "cpu"
    notes: list[str] = []
    if hardware.cuda and not on_gpu:
        notes.append(f"the model stays on the CPU although {hardware.device_name} is available.")
    elif not hardware.cuda and preset.device != "cpu":
        notes.append("no CUDA GPU: the model runs on the CPU.")
    attn_implementation = _attention(preset, hardware, on_gpu, notes, _flash_attention_class(shape))
    _check_bitsandbytes(preset, hardware, name)
    dtype = _dtype(preset, hardware, on_gpu, notes)

    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn_implementation}
    if preset.quantization is not None:
        kwargs["quantization_config"] = _bitsandbytes_config(preset.quantization, dtype, offload)
        notes.append(_quantization_note(preset.quantization, dtype, hardware, on_gpu))
        if shape is not None and shape.num_experts:
            row = find_architecture(shape.config_dict().get("model_type") or "mixtral")
            experts = "Mixtral" if row is not None and row.model_type == "mixtral" else "routed"
            notes.append(
                f"the {experts} experts are quantized only when loaded through hf_mistral_kit "
                "(transformers 5 keeps its fused expert weights unquantized)."
            )
    kwargs["device_map"] = "cuda:0" if on_gpu else "cpu"

    resolved = ResolvedPreset(
        name=name,
        preset=preset,
        kwargs=kwargs,
        notes=notes,
        dtype=dtype,
        attn_implementation=attn_implementation,
        device="cuda" if on_gpu else "cpu",
        hardware=hardware,
        offload=offload,
    )
    if shape is None:
        return resolved
    plan = resolved.plan_for(shape, context_length=context_length, hardware=hardware)
    if offload:
        weight_budget = hardware.free_memory - (plan.kv_cache_bytes + plan.activation_bytes + plan.overhead_bytes)
        kwargs["device_map"] = "auto"
        kwargs["max_memory"] = {0: max(weight_budget, 0), "cpu": hardware.cpu_memory - CPU_OVERHEAD_BYTES}
        notes.append(
            f"{plan.offloaded_layers} of {shape.num_layers} decoder layers do not fit on {hardware.device_name}: "
            f"device_map='auto' keeps them in CPU RAM ({plan.offloaded_bytes / GiB:.1f} GiB"
            f"{', unquantized' if preset.quantization else ''}) and streams them in for every token, which is slow."
        )
    return dataclasses.replace(resolved, plan=plan)


def _flash_attention_class(shape: ModelShape | None) -> str | None:
    """The transformers class of `shape`'s architecture where it runs no flash_attention_2 (None: it does, or the
    model is not known)."""
    row = None if shape is None else find_text_model_architecture(shape.config_dict().get("model_type"))
    return None if row is None or row.flash_attention else row.causal_lm


def _attention(preset: Preset, hardware: Hardware, on_gpu: bool, notes: list[str], no_flash: str | None = None) -> str:
    cc = hardware.compute_capability_str
    if preset.attention == "flash_attention_2" and no_flash is not None:
        raise PresetError(
            f"flash_attention_2: transformers' {no_flash} does not support it; use preset='sdpa' (or 'auto', "
            "'bf16', 'fp16', which pick sdpa for it)."
        )
    if preset.attention == "best" and on_gpu and no_flash is not None:
        notes.append(f"transformers' {no_flash} has no flash_attention_2 -> sdpa.")
        return "sdpa"
    if preset.attention == "flash_attention_2":
        if not on_gpu:
            raise PresetError(
                "flash_attention_2 needs a CUDA GPU with compute capability >= 8.0 and this machine has none: "
                "use preset='sdpa' or 'auto'."
            )
        if not hardware.is_ampere_or_newer:
            raise PresetError(
                f"flash_attention_2 needs compute capability >= 8.0 (Ampere or newer); {hardware.device_name} is "
                f"{cc}: use preset='sdpa' (or 'auto'), which runs PyTorch's memory-efficient attention."
            )
        if not hardware.flash_attn:
            raise ImportError(
                f"flash_attention_2 needs the flash-attn package (>= {FLASH_ATTN_MIN_VERSION}), which is not "
                "installed: pip install flash-attn --no-build-isolation, or use preset='sdpa'."
            )
    elif preset.attention == "best" and on_gpu:
        if not hardware.is_ampere_or_newer:
            notes.append(f"flash_attention_2 needs compute capability >= 8.0; {hardware.device_name} is {cc} -> sdpa.")
            return "sdpa"
        if not hardware.flash_attn:
            notes.append("flash-attn is not installed -> sdpa (pip install flash-attn for flash_attention_2).")
            return "sdpa"
    else:
        return "sdpa"
    notes.append("flash_attention_2 needs left padding for batched generation: load_model sets padding_side='left'.")
    return "flash_attention_2"


def _check_bitsandbytes(preset: Preset, hardware: Hardware, name: str) -> None:
    if preset.quantization is not None and not hardware.bitsandbytes:
        raise ImportError(
            f"preset {name!r} quantizes with bitsandbytes (>= {BITSANDBYTES_MIN_VERSION}), which is not installed: "
            "pip install 'hf-mistral-kit[bnb]' (or pip install -U bitsandbytes)."
        )


def _dtype(preset: Preset, hardware: Hardware, on_gpu: bool, notes: list[str]) -> torch.dtype:
    precision = preset.precision
    if on_gpu:
        if precision == "bf16" and not hardware.bf16:
            raise PresetError(
                f"bf16 needs compute capability >= 8.0 (Ampere or newer); {hardware.device_name} is "
                f"{hardware.compute_capability_str} and would emulate it slowly: use preset='fp16' (or 'auto')."
            )
        if precision == "half" and not hardware.bf16:
            notes.append(
                f"{hardware.device_name} (compute capability {hardware.compute_capability_str}) has no native "
                "bfloat16 -> float16."
            )
            return torch.float16
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "half": torch.bfloat16}.get(precision, torch.float32)

    if precision == "fp32":
        return torch.float32
    if precision in ("bf16", "fp16"):
        if not hardware.cpu_amx:
            notes.append(
                f"{_DTYPE_NAMES[_HALF[precision]]} on a CPU without AMX halves memory but decodes slower than "
                "float32 (preset 'cpu')."
            )
        return _HALF[precision]
    if preset.quantization == "nf4":
        # bitsandbytes' CPU 4-bit kernels run faster in bf16 where the CPU has bf16 instructions.
        return torch.bfloat16 if hardware.cpu_bf16 else torch.float32
    if preset.quantization == "int8":
        notes.append("float32 around LLM.int8 on the CPU: bitsandbytes' CPU int8 matmul is fastest with it.")
        return torch.float32
    if hardware.cpu_amx:
        notes.append("this CPU has AMX: bfloat16 matmuls are faster than float32 -> bfloat16.")
        return torch.bfloat16
    notes.append("float32 on the CPU: half precision only saves memory there and decodes slower without AMX.")
    return torch.float32


def _bitsandbytes_config(quantization: str, dtype: torch.dtype, offload: bool):
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_enable_fp32_cpu_offload=offload)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        llm_int8_enable_fp32_cpu_offload=offload,
    )


def _quantization_note(quantization: str, dtype: torch.dtype, hardware: Hardware, on_gpu: bool) -> str:
    if quantization == "int8":
        return (
            "LLM.int8 decomposes outliers on every matmul and runs several times slower than fp16: "
            "preset '4bit' is smaller and faster, 'fp16'/'bf16' faster where they fit."
        )
    compute = _DTYPE_NAMES[dtype]
    if on_gpu and dtype == torch.float16:
        why = f"{hardware.device_name} has no native bfloat16 and float32 compute would be slow"
    elif on_gpu:
        why = "as in QLoRA"
    elif dtype == torch.bfloat16:
        why = "this CPU has bf16 instructions"
    else:
        why = "this CPU has no bf16 instructions"
    return f"4-bit NF4 with double quantization, computing in {compute} ({why})."


def _resolve_auto(hardware: Hardware, shape: ModelShape | None, context_length: int | None) -> ResolvedPreset:
    ladder = _auto_ladder(hardware)
    if shape is None:
        preset, _ = ladder[0]
        resolved = _resolve(preset, hardware, None, None, requested="auto")
        note = f"auto -> {preset.name!r}: no model config given, so memory was not checked."
        return dataclasses.replace(resolved, notes=[note, *resolved.notes])
    skipped = []
    if not hardware.bitsandbytes:
        skipped.append("bitsandbytes is not installed, so 4-bit was not considered (pip install bitsandbytes).")
    needs = []
    for preset, offload in ladder:
        resolved = _resolve(preset, hardware, shape, context_length, requested="auto", offload=offload)
        plan = resolved.plan
        if plan.fits:
            chosen = (
                f"auto -> {preset.name!r}{' + CPU offload' if offload else ''} on {resolved.device}: "
                f"needs {plan.device_bytes / GiB:.1f} GiB of the {plan.available_bytes / GiB:.1f} GiB free."
            )
            return dataclasses.replace(resolved, notes=[*skipped, chosen, *resolved.notes])
        if not offload:
            needs.append(plan.total_bytes)
            skipped.append(
                f"{preset.name!r} on {resolved.device} needs {plan.total_bytes / GiB:.1f} GiB, more than the "
                f"{plan.available_bytes / GiB:.1f} GiB free."
            )
    raise DoesNotFitError(
        f"{shape.name} does not fit this machine in any preset: it needs at least {min(needs) / GiB:.1f} GiB for "
        f"{context_length} tokens ({hardware.describe()}, {hardware.cpu_memory / GiB:.1f} GiB RAM). Use a shorter "
        "context_length, or offload to disk with load_model(..., device_map='auto', offload_folder='offload')."
    )


def _auto_ladder(hardware: Hardware) -> list[tuple[Preset, bool]]:
    """(preset, offload) rungs from fastest to slowest."""
    bnb = hardware.bitsandbytes
    on_cpu = [dataclasses.replace(PRESETS[name], device="cpu") for name in ("bf16", "4bit")]
    if not hardware.cuda:
        fp32, bf16 = PRESETS["cpu"], on_cpu[0]
        ladder = [bf16, fp32] if hardware.cpu_amx else [fp32, bf16]
        return [(preset, False) for preset in ladder] + ([(on_cpu[1], False)] if bnb else [])
    half = PRESETS["bf16" if hardware.bf16 else "fp16"]
    ladder = [(half, False)]
    if bnb:
        ladder += [(PRESETS["4bit"], False), (PRESETS["4bit"], True)]
    ladder.append((half, True))
    if bnb:
        ladder.append((on_cpu[1], False))
    return ladder


def _does_not_fit(resolved: ResolvedPreset, shape: ModelShape, context_length: int) -> str:
    plan = resolved.plan
    hardware = resolved.hardware
    alternatives = _fitting_alternatives(hardware, shape, context_length)
    fixes = [f"preset='{name}' ({why})" for name, why in alternatives]
    if not any(name == "auto" for name, _ in alternatives):
        fixes.append("offloading to disk with load_model(..., device_map='auto', offload_folder='offload')")
    return (
        f"{shape.name} in preset {resolved.name!r} ({resolved.weight_format}, {context_length} tokens) needs "
        f"{plan.total_bytes / GiB:.1f} GiB but {hardware.device_name} has {plan.available_bytes / GiB:.1f} GiB "
        f"{'RAM' if resolved.device == 'cpu' else 'free'}: use {', '.join(fixes)}, or a shorter context_length."
    )


def _fitting_alternatives(
    hardware: Hardware, shape: ModelShape, context_length: int, batch_size: int = 1
) -> list[tuple[str, str]]:
    """(preset, what it needs or becomes) for the explicit presets that fit, then 'auto' if anything fits."""
    fits = []
    for name in ("bf16", "fp16", "4bit", "8bit"):
        try:
            alternative = _resolve(PRESETS[name], hardware, shape, context_length)
        except (PresetError, ImportError):
            continue
        plan = alternative.plan_for(shape, context_length=context_length, batch_size=batch_size, hardware=hardware)
        if plan.fits:
            fits.append((name, f"{plan.total_bytes / GiB:.1f} GiB"))
    try:
        auto = _resolve_auto(hardware, shape, context_length)
    except PresetError:
        return fits
    plan = auto.plan_for(shape, context_length=context_length, batch_size=batch_size, hardware=hardware)
    if plan.fits:
        where = " on the CPU" if auto.device == "cpu" and hardware.cuda else ""
        fits.append(("auto", f"{auto.preset.name}{' + CPU offload' if auto.offload else ''}{where}"))
    return fits


def suggest_presets(requested: str, hardware: Hardware, model: Any, context_length: int, batch_size: int = 1) -> str:
    """A sentence naming the presets that fit `model` on `hardware` (other than `requested`), for the CLI."""
    shape = ModelShape.from_config(model)
    fits = [
        f"--preset {name} ({why})"
        for name, why in _fitting_alternatives(hardware, shape, context_length, batch_size)
        if name != requested
    ]
    if not fits:
        return "No preset fits: use a shorter --context or a smaller --batch-size (or a machine with more memory)."
    return f"These fit: {', '.join(fits)}; or use a shorter --context."


_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
_PRECISION_NAMES = {
    "half": "bfloat16/float16",
    "bf16": "bfloat16",
    "fp16": "float16",
    "fp32": "float32",
    "auto": "auto",
}
_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def _weight_format(quantization: str | None, dtype_name: str) -> str:
    if quantization == "nf4":
        return f"NF4 + double quant, {dtype_name} compute"
    if quantization == "int8":
        return f"LLM.int8, {dtype_name} elsewhere"
    return dtype_name


def _kwargs_summary(kwargs: dict[str, Any]) -> str:
    parts = []
    for key, value in kwargs.items():
        if key == "quantization_config":
            value = (
                "BitsAndBytesConfig("
                + (
                    f"load_in_4bit, nf4, double_quant, compute={_DTYPE_NAMES[value.bnb_4bit_compute_dtype]}"
                    if value.load_in_4bit
                    else "load_in_8bit"
                )
                + (", cpu_offload" if value.llm_int8_enable_fp32_cpu_offload else "")
                + ")"
            )
        elif key == "max_memory":
            value = {device: f"{size / GiB:.1f}GiB" for device, size in value.items()}
        elif isinstance(value, torch.dtype):
            value = f"torch.{_DTYPE_NAMES[value]}"
        else:
            value = repr(value)
        parts.append(f"{key}={value}")
    return ", ".join(parts)
