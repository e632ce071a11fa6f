import pytest
import torch
from transformers import BitsAndBytesConfig

from hf_mistral_kit import PRESETS, Hardware, PresetError, ResolvedPreset, resolve_preset
from reference_configs import MISTRAL_7B, MIXTRAL_8X7B

GiB = 2**30
BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32
AMPERE_PROFILES = ["a10g", "l4", "a100-40gb", "a100-80gb", "h100", "rtx4090"]

LEFT_PADDING = "flash_attention_2 needs left padding for batched generation: load_model sets padding_side='left'."
INT8_SLOW = (
    "LLM.int8 decomposes outliers on every matmul and runs several times slower than fp16: "
    "preset '4bit' is smaller and faster, 'fp16'/'bf16' faster where they fit."
)
NO_CUDA = "no CUDA GPU: the model runs on the CPU."
CPU_INT8 = "float32 around LLM.int8 on the CPU: bitsandbytes' CPU int8 matmul is fastest with it."
CPU_FP32 = "float32 on the CPU: half precision only saves memory there and decodes slower without AMX."
T4_NO_FA2 = "flash_attention_2 needs compute capability >= 8.0; Tesla T4 is 7.5 -> sdpa."
T4_NO_BF16 = "Tesla T4 (compute capability 7.5) has no native bfloat16 -> float16."
T4_CPU = "the model stays on the CPU although Tesla T4 is available."


def nf4_note(compute, why):
    return f"4-bit NF4 with double quantization, computing in {compute} ({why})."


# preset -> (dtype, attn_implementation, quantization[, 4-bit compute dtype], device_map, notes), or (error, message)
TABLE = {
    "t4": {
        "fp16": (FP16, "sdpa", None, "cuda:0", [T4_NO_FA2]),
        "bf16": (
            PresetError,
            "bf16 needs compute capability >= 8.0 (Ampere or newer); Tesla T4 is 7.5 and would emulate it slowly: "
            "use preset='fp16' (or 'auto').",
        ),
        "8bit": (FP16, "sdpa", "int8", "cuda:0", [T4_NO_FA2, T4_NO_BF16, INT8_SLOW]),
        "4bit": (
            FP16,
            "sdpa",
            "nf4",
            "cuda:0",
            [
                T4_NO_FA2,
                T4_NO_BF16,
                nf4_note("float16", "Tesla T4 has no native bfloat16 and float32 compute would be slow"),
            ],
        ),
        "fa2": (
            PresetError,
            "flash_attention_2 needs compute capability >= 8.0 (Ampere or newer); Tesla T4 is 7.5: use preset='sdpa' "
            "(or 'auto'), which runs PyTorch's memory-efficient attention.",
        ),
        "sdpa": (FP16, "sdpa", None, "cuda:0", [T4_NO_BF16]),
        "cpu": (FP32, "sdpa", None, "cpu", [T4_CPU]),
        "auto": (
            FP16,
            "sdpa",
            None,
            "cuda:0",
            ["auto -> 'fp16': no model config given, so memory was not checked.", T4_NO_FA2],
        ),
    },
    "ampere": {
        "fp16": (FP16, "flash_attention_2", None, "cuda:0", [LEFT_PADDING]),
        "bf16": (BF16, "flash_attention_2", None, "cuda:0", [LEFT_PADDING]),
        "8bit": (BF16, "flash_attention_2", "int8", "cuda:0", [LEFT_PADDING, INT8_SLOW]),
        "4bit": (BF16, "flash_attention_2", "nf4", "cuda:0", [LEFT_PADDING, nf4_note("bfloat16", "as in QLoRA")]),
        "fa2": (BF16, "flash_attention_2", None, "cuda:0", [LEFT_PADDING]),
        "sdpa": (BF16, "sdpa", None, "cuda:0", []),
        "cpu": (FP32, "sdpa", None, "cpu", ["the model stays on the CPU although {device} is available."]),
        "auto": (
            BF16,
            "flash_attention_2",
            None,
            "cuda:0",
            ["auto -> 'bf16': no model config given, so memory was not checked.", LEFT_PADDING],
        ),
    },
    "cpu": {
        "fp16": (
            FP16,
            "sdpa",
            None,
            "cpu",
            [
                NO_CUDA,
                "float16 on a CPU without AMX halves memory but decodes slower than float32 (preset 'cpu').",
            ],
        ),
        "bf16": (
            BF16,
            "sdpa",
            None,
            "cpu",
            [
                NO_CUDA,
                "bfloat16 on a CPU without AMX halves memory but decodes slower than float32 (preset 'cpu').",
            ],
        ),
        "8bit": (FP32, "sdpa", "int8", "cpu", [NO_CUDA, CPU_INT8, INT8_SLOW]),
        "4bit": (FP32, "sdpa", "nf4", "cpu", [NO_CUDA, nf4_note("float32", "this CPU has no bf16 instructions")]),
        "fa2": (
            PresetError,
            "flash_attention_2 needs a CUDA GPU with compute capability >= 8.0 and this machine has none: "
            "use preset='sdpa' or 'auto'.",
        ),
        "sdpa": (FP32, "sdpa", None, "cpu", [NO_CUDA, CPU_FP32]),
        "cpu": (FP32, "sdpa", None, "cpu", []),
        "auto": (FP32, "sdpa", None, "cpu", ["auto -> 'cpu': no model config given, so memory was not checked."]),
    },
}

CASES = [
    (profile, preset, TABLE["ampere" if profile in AMPERE_PROFILES else profile][preset])
    for profile in ["t4", *AMPERE_PROFILES, "cpu"]
    for preset in PRESETS
]


def test_the_table_covers_every_profile_and_preset():
    assert set(PRESETS) == {"fp16", "bf16", "8bit", "4bit", "fa2", "sdpa", "cpu", "auto"}
    assert len(CASES) == 8 * 8


@pytest.mark.parametrize("profile, preset, expected", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_resolution_table(profile, preset, expected):
    hardware = Hardware.profile(profile)
    if isinstance(expected[0], type) and issubclass(expected[0], Exception):
        error, message = expected
        with pytest.raises(error) as raised:
            resolve_preset(preset, hardware)
        assert str(raised.value) == message
        return
    dtype, attn, quantization, device_map, notes = expected
    resolved = resolve_preset(preset, hardware)
    assert isinstance(resolved, ResolvedPreset) and resolved.name == preset
    expected_kwargs = {"dtype": dtype, "attn_implementation": attn, "device_map": device_map}
    config = resolved.kwargs.pop("quantization_config", None)
    assert resolved.kwargs == expected_kwargs
    assert resolved.quantization == quantization
    if quantization is None:
        assert config is None
    else:
        assert isinstance(config, BitsAndBytesConfig)
        assert config.load_in_4bit is (quantization == "nf4") and config.load_in_8bit is (quantization == "int8")
        if quantization == "nf4":
            assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
            assert config.bnb_4bit_compute_dtype == dtype
        assert not config.llm_int8_enable_fp32_cpu_offload
    assert resolved.notes == [note.format(device=hardware.device_name) for note in notes]


def test_flash_attn_missing():
    a100 = Hardware.profile("a100-80gb", flash_attn=False)
    with pytest.raises(ImportError, match=r"flash_attention_2 needs the flash-attn package \(>= 2.3.3\), which is not"):
        resolve_preset("fa2", a100)
    with pytest.raises(ImportError, match=r"pip install flash-attn --no-build-isolation, or use preset='sdpa'\.$"):
        resolve_preset("fa2", a100)
    resolved = resolve_preset("bf16", a100)
    assert resolved.attn_implementation == "sdpa" == resolved.kwargs["attn_implementation"]
    assert resolved.notes == ["flash-attn is not installed -> sdpa (pip install flash-attn for flash_attention_2)."]


@pytest.mark.parametrize("preset", ["4bit", "8bit"])
@pytest.mark.parametrize("profile", ["t4", "a100-80gb", "cpu"])
def test_bitsandbytes_missing(profile, preset):
    hardware = Hardware.profile(profile, bitsandbytes=False)
    with pytest.raises(ImportError) as raised:
        resolve_preset(preset, hardware)
    assert str(raised.value) == (
        f"preset '{preset}' quantizes with bitsandbytes (>= 0.46.1), which is not installed: "
        "pip install 'hf-mistral-kit[bnb]' (or pip install -U bitsandbytes)."
    )


def test_unknown_preset():
    with pytest.raises(PresetError, match=r"unknown preset 'int4'; choose one of 'fp16', 'bf16', '8bit', '4bit'"):
        resolve_preset("int4", Hardware.profile("cpu"))


def test_cpu_with_bf16_instructions_computes_4bit_in_bf16():
    resolved = resolve_preset("4bit", Hardware.profile("cpu", cpu_bf16=True))
    assert resolved.dtype == BF16 == resolved.kwargs["quantization_config"].bnb_4bit_compute_dtype
    assert resolved.notes[-1] == nf4_note("bfloat16", "this CPU has bf16 instructions")


def test_cpu_with_amx_prefers_bf16():
    amx = Hardware.profile("cpu", cpu_bf16=True, cpu_amx=True, bf16=True)
    assert resolve_preset("sdpa", amx).dtype == BF16
    auto = resolve_preset("auto", amx, model=MISTRAL_7B)
    assert auto.preset.name == "bf16" and auto.kwargs["device_map"] == "cpu" and auto.dtype == BF16


# --- auto with a model: the fastest preset that fits ---------------------------------------------------------------


def test_auto_mistral_7b_on_80gb_is_bf16_with_flash_attention():
    for profile in ("a100-80gb", "h100"):
        resolved = resolve_preset("auto", Hardware.profile(profile), model=MISTRAL_7B)
        assert resolved.preset.name == "bf16" and not resolved.offload
        assert resolved.kwargs == {"dtype": BF16, "attn_implementation": "flash_attention_2", "device_map": "cuda:0"}
        assert resolved.plan.fits and resolved.plan.weights_bytes == 14_483_464_192
        assert resolved.notes[0] == "memory planned for 4096 tokens per sequence; pass context_length= for longer ones."
        assert resolved.notes[1].startswith("auto -> 'bf16' on cuda: needs 14.9 GiB of the ")


def test_auto_without_flash_attn_is_bf16_with_sdpa():
    resolved = resolve_preset("auto", Hardware.profile("a100-80gb", flash_attn=False), model=MISTRAL_7B)
    assert resolved.dtype == BF16 and resolved.attn_implementation == "sdpa"


def test_auto_mistral_7b_on_t4_depends_on_the_context():
    t4 = Hardware.profile("t4")
    short = resolve_preset("auto", t4, model=MISTRAL_7B, context_length=1024)
    assert short.preset.name == "fp16" and short.dtype == FP16 and short.quantization is None
    long = resolve_preset("auto", t4, model=MISTRAL_7B, context_length=4096)
    assert long.preset.name == "4bit" and long.kwargs["quantization_config"].bnb_4bit_compute_dtype == FP16
    assert long.notes[0] == "'fp16' on cuda needs 14.9 GiB, more than the 14.5 GiB free."


def test_auto_mixtral_on_a_24gb_card_is_4bit_with_two_layers_offloaded():
    rtx4090 = Hardware.profile("rtx4090")
    resolved = resolve_preset("auto", rtx4090, model=MIXTRAL_8X7B)
    assert resolved.preset.name == "4bit" and resolved.offload
    config = resolved.kwargs["quantization_config"]
    assert config.load_in_4bit and config.llm_int8_enable_fp32_cpu_offload
    assert resolved.kwargs["device_map"] == "auto"
    plan = resolved.plan
    assert resolved.kwargs["max_memory"] == {
        0: rtx4090.free_memory - plan.kv_cache_bytes - plan.activation_bytes - plan.overhead_bytes,
        "cpu": rtx4090.cpu_memory - GiB,
    }
    assert plan.offloaded_layers == 2
    assert "'bf16' on cuda needs 88.8 GiB, more than the 23.5 GiB free." in resolved.notes
    assert "'4bit' on cuda needs 24.6 GiB, more than the 23.5 GiB free." in resolved.notes
    assert resolved.notes[-1] == (
        "2 of 32 decoder layers do not fit on NVIDIA GeForce RTX 4090: device_map='auto' keeps them in CPU RAM "
        "(5.4 GiB, unquantized) and streams them in for every token, which is slow."
    )
    assert (
        "the Mixtral experts are quantized only when loaded through hf_mistral_kit "
        "(transformers 5 keeps its fused expert weights unquantized)."
    ) in resolved.notes


def test_auto_mixtral_on_80gb_is_4bit_on_the_gpu():
    resolved = resolve_preset("auto", Hardware.profile("a100-80gb"), model=MIXTRAL_8X7B)
    assert resolved.preset.name == "4bit" and not resolved.offload and resolved.kwargs["device_map"] == "cuda:0"


def test_auto_mixtral_on_a_cpu_box_is_4bit_in_ram():
    resolved = resolve_preset("auto", Hardware.profile("cpu"), model=MIXTRAL_8X7B)
    assert resolved.preset.name == "4bit" and resolved.kwargs["device_map"] == "cpu" and resolved.dtype == FP32


def test_auto_without_bitsandbytes_offloads_in_half_precision():
    no_bnb = Hardware.profile("a100-40gb", bitsandbytes=False, cpu_memory=128 * GiB)
    resolved = resolve_preset("auto", no_bnb, model=MIXTRAL_8X7B)
    assert resolved.preset.name == "bf16" and resolved.offload and "quantization_config" not in resolved.kwargs
    assert resolved.notes[1] == "bitsandbytes is not installed, so 4-bit was not considered (pip install bitsandbytes)."


def test_auto_raises_only_when_nothing_fits():
    tiny_box = Hardware.profile("cpu", free_memory=16 * GiB, cpu_memory=16 * GiB)
    with pytest.raises(PresetError) as raised:
        resolve_preset("auto", tiny_box, model=MIXTRAL_8X7B)
    assert str(raised.value).startswith("mistralai/Mixtral-8x7B-v0.1 does not fit this machine in any preset: it needs")
    assert "offload to disk with load_model(..., device_map='auto', offload_folder='offload')" in str(raised.value)


def test_explicit_preset_that_does_not_fit_names_the_presets_that_do():
    with pytest.raises(PresetError) as raised:
        resolve_preset("bf16", Hardware.profile("a100-80gb"), model=MIXTRAL_8X7B)
    assert str(raised.value) == (
        "mistralai/Mixtral-8x7B-v0.1 in preset 'bf16' (bfloat16, 4096 tokens) needs 88.8 GiB but "
        "NVIDIA A100-SXM4-80GB has 79.5 GiB free: use preset='4bit' (24.6 GiB), preset='8bit' (45.5 GiB), "
        "preset='auto' (4bit), or a shorter context_length."
    )
    with pytest.raises(PresetError) as raised:
        resolve_preset("4bit", Hardware.profile("cpu", free_memory=20 * GiB, cpu_memory=20 * GiB), model=MIXTRAL_8X7B)
    assert str(raised.value) == (
        "mistralai/Mixtral-8x7B-v0.1 in preset '4bit' (NF4 + double quant, float32 compute, 4096 tokens) needs "
        "26.8 GiB but x86-64 CPU (AVX2) has 20.0 GiB RAM: use offloading to disk with load_model(..., "
        "device_map='auto', offload_folder='offload'), or a shorter context_length."
    )
    unchecked = resolve_preset("bf16", Hardware.profile("a100-80gb"), model=MIXTRAL_8X7B, check_fit=False)
    assert unchecked.plan.fits is False


def test_str_summarizes_kwargs_and_notes():
    text = str(resolve_preset("4bit", Hardware.profile("t4")))
    assert text.splitlines()[0] == "preset '4bit' on Tesla T4 (compute capability 7.5, 14.5 GiB free)"
    assert text.splitlines()[1] == (
        "  from_pretrained kwargs: dtype=torch.float16, attn_implementation='sdpa', quantization_config="
        "BitsAndBytesConfig(load_in_4bit, nf4, double_quant, compute=float16), device_map='cuda:0'"
    )
    assert text.splitlines()[2] == f"  - {T4_NO_FA2}"


# issue 21: the Large line's transformers class has no flash_attention_2 (`_supports_flash_attn = False`).
def test_flash_attention_is_picked_only_where_the_architecture_has_it():
    import dataclasses
    import importlib

    from hf_mistral_kit.architectures import ARCHITECTURES
    from tiny_configs import MISTRAL4, MISTRAL_LARGE4, available

    for row in ARCHITECTURES:  # the rows agree with transformers' classes, where the installed release has them
        if available(row.model_type):
            module = importlib.import_module(f"transformers.models.{row.model_type}.modeling_{row.model_type}")
            assert getattr(module, row.causal_lm)._supports_flash_attn == row.flash_attention, row.model_type

    h100 = dataclasses.replace(Hardware.profile("h100"), flash_attn=True)
    assert resolve_preset("bf16", h100, model=MISTRAL4).kwargs["attn_implementation"] == "flash_attention_2"
    for preset in ("auto", "bf16", "fp16", "4bit"):
        resolved = resolve_preset(preset, h100, model=MISTRAL_LARGE4)
        assert resolved.kwargs["attn_implementation"] == "sdpa"
        assert "transformers' MistralLarge4ForConditionalGeneration has no flash_attention_2 -> sdpa." in resolved.notes
    with pytest.raises(
        PresetError, match="MistralLarge4ForConditionalGeneration does not support it; use preset='sdpa'"
    ):
        resolve_preset("fa2", h100, model=MISTRAL_LARGE4)


def test_presets_plan_what_the_auto_class_loads_of_a_vision_language_model():
    """A causal LM of mistral3 is its text model; the Large line has none but the whole model (what the kit's
    AutoModelForCausalLM and load_model load); AutoModelForImageTextToText (vision=True) loads every wrapper whole."""
    from hf_mistral_kit.planning.memory import ModelShape
    from tiny_configs import MISTRAL3, MISTRAL_LARGE4

    cpu = Hardware.profile("cpu")
    for config, causal_lm_is_whole in ((MISTRAL3, False), (MISTRAL_LARGE4, True)):
        text = ModelShape.from_config(config).parameter_count()
        whole = ModelShape.from_config(config, vision=True).parameter_count()
        assert whole > text
        assert resolve_preset("cpu", cpu, model=config).plan.parameters == (whole if causal_lm_is_whole else text)
        assert resolve_preset("cpu", cpu, model=config, vision=True).plan.parameters == whole
