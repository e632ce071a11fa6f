"""Real loads of tiny random Mistral checkpoints on this CPU, one per preset the CPU supports."""

import json
import os
import shutil
import subprocess
import sys
import warnings

import bitsandbytes as bnb
import bitsandbytes.functional as bnbf
import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from hf_mistral_kit import (
    Hardware,
    PresetError,
    get_chat_template,
    load_model,
    load_tokenizer,
    lora_config,
    plan_memory,
)
from hf_mistral_kit import reference_tokenizer_file as tokenizer_file
from hf_mistral_kit.loading import set_pad_token

CPU = Hardware.profile("cpu")  # 32 GiB, AVX2 without bf16: deterministic choices whatever box runs the tests
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def save_tiny_mistral(path, vocab_size=32000, seed=0):
    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    model = MistralForCausalLM(config).eval()
    model.save_pretrained(path)
    shutil.copy(tokenizer_file("v1"), path / "tokenizer.model")
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-mistral")
    return path, save_tiny_mistral(path)


@pytest.fixture(scope="module")
def input_ids():
    return load_tokenizer(tokenizer_file("v1"))("[INST] Hello, how are you? [/INST]", return_tensors="pt").input_ids


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.float()


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def stored_weight_bytes(model):
    """Bytes the loaded weights really take, bitsandbytes' quantization state included."""
    total = 0
    for param in model.parameters():
        total += param.numel() * param.element_size()
        state = getattr(param, "quant_state", None)
        if state is not None:
            tensors = [state.absmax, state.code]
            if state.nested:
                tensors += [state.state2.absmax, state.state2.code, state.offset]
            total += sum(t.numel() * t.element_size() for t in tensors)
        if getattr(param, "SCB", None) is not None:
            total += param.SCB.numel() * param.SCB.element_size()
    return total


@pytest.mark.parametrize("preset", ["cpu", "sdpa", "auto"])
def test_float32_presets_match_the_reference(tiny, input_ids, preset):
    path, reference = tiny
    model, _ = load_model(path, preset, hardware=CPU)
    assert model.dtype == torch.float32 and model.config._attn_implementation == "sdpa"
    assert model.device.type == "cpu"
    torch.testing.assert_close(logits(model, input_ids), logits(reference, input_ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_on_cpu(tiny, input_ids, preset, dtype):
    path, reference = tiny
    model, _ = load_model(path, preset, hardware=CPU)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert cosine(logits(model, input_ids), logits(reference, input_ids)) > 0.999
    assert stored_weight_bytes(model) == plan_memory(path, preset, context_length=1, hardware=CPU).weights_bytes


@pytest.mark.parametrize(
    "hardware", [CPU, Hardware.profile("cpu", cpu_bf16=True)], ids=["fp32-compute", "bf16-compute"]
)
def test_4bit_nf4_on_cpu(tiny, input_ids, hardware):
    path, reference = tiny
    model, _ = load_model(path, "4bit", hardware=hardware)
    compute = torch.bfloat16 if hardware.cpu_bf16 else torch.float32
    assert model.is_loaded_in_4bit
    for layer in model.model.layers:
        for name, module in layer.named_modules():
            if name.split(".")[-1] in PROJECTIONS:
                assert isinstance(module, bnb.nn.Linear4bit), name
                assert module.weight.quant_type == "nf4" and module.weight.quant_state.nested  # double quant
                assert module.compute_dtype == compute
    assert type(model.lm_head) is torch.nn.Linear and model.lm_head.weight.dtype == compute
    assert stored_weight_bytes(model) == plan_memory(path, "4bit", context_length=1, hardware=hardware).weights_bytes

    # The 4-bit model computes what the reference computes with the dequantized NF4 weights. Compared in training
    # mode: in eval mode, bitsandbytes repacks the weights on CPUs with avx512_bf16 and computes in bf16.
    dequantized = MistralForCausalLM(reference.config)
    dequantized.load_state_dict(reference.state_dict())
    for (name, module), (reference_name, reference_module) in zip(
        model.named_modules(), dequantized.named_modules(), strict=True
    ):
        assert name == reference_name
        if isinstance(module, bnb.nn.Linear4bit):
            weight = bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state)
            reference_module.weight.data = weight.float()
    model.train()
    tolerance = 2e-2 if compute == torch.bfloat16 else 1e-5
    torch.testing.assert_close(logits(model, input_ids), logits(dequantized, input_ids), atol=tolerance, rtol=0)
    model.eval()
    assert cosine(logits(model, input_ids), logits(reference, input_ids)) > 0.95  # NF4 is lossy, not broken


def test_8bit_llm_int8_on_cpu(tiny, input_ids):
    path, reference = tiny
    model, _ = load_model(path, "8bit", hardware=CPU)
    assert model.is_loaded_in_8bit
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert len(quantized) == 2 * len(PROJECTIONS) and all(m.weight.dtype == torch.int8 for m in quantized)
    assert stored_weight_bytes(model) == plan_memory(path, "8bit", context_length=1, hardware=CPU).weights_bytes
    assert cosine(logits(model, input_ids), logits(reference, input_ids)) > 0.999


def test_flash_attention_on_cpu_fails_before_loading(tiny):
    with pytest.raises(PresetError, match="flash_attention_2 needs a CUDA GPU"):
        load_model(tiny[0], "fa2", hardware=CPU)


def test_tokenizer_and_generation_config(tiny):
    model, tokenizer = load_model(tiny[0], "cpu", hardware=CPU)
    assert tokenizer.pad_token == "<unk>" and tokenizer.pad_token_id == 0 != tokenizer.eos_token_id == 2
    assert tokenizer.padding_side == "left"
    assert tokenizer.chat_template == get_chat_template("mistral_v1")
    config = model.generation_config
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 1, 2)
    assert config.max_new_tokens == 512 and model.config.pad_token_id == 0


def test_batched_generation_matches_one_prompt_at_a_time(tiny):
    model, tokenizer = load_model(tiny[0], "cpu", hardware=CPU)
    chats = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "Write a long poem about the sea and the wind, please"}],
    ]
    prompts = [tokenizer.apply_chat_template(chat, tokenize=False) for chat in chats]
    batch = tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    assert batch.attention_mask[0, 0] == 0  # the short prompt is padded on the left
    generated = model.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch.input_ids.shape[1] :]
    for prompt, row in zip(prompts, generated, strict=True):
        single = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        alone = model.generate(**single, max_new_tokens=6, do_sample=False)[0, single.input_ids.shape[1] :]
        assert row.tolist() == alone.tolist()


def test_overrides_win_over_the_preset(tiny):
    model, _ = load_model(tiny[0], "cpu", hardware=CPU, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16


def test_a_device_map_override_skips_the_fit_check(tiny):
    no_room = Hardware.profile("cpu", free_memory=2**20, cpu_memory=2**20)
    with pytest.raises(PresetError, match=r"in preset 'cpu' \(float32, 512 tokens\) needs .* but x86-64 CPU"):
        load_model(tiny[0], "cpu", hardware=no_room)
    model, _ = load_model(tiny[0], "cpu", hardware=no_room, device_map="cpu")
    assert model.device.type == "cpu"


def test_pad_token_never_aliases_eos():
    tokenizer = load_tokenizer(tokenizer_file("v1"))
    tokenizer.pad_token = tokenizer.eos_token  # the common workaround that stops fine-tunes from learning EOS
    assert set_pad_token(tokenizer) == "<unk>" and tokenizer.pad_token_id == 0
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    assert set_pad_token(tokenizer) == "<pad>"  # a dedicated pad token is kept


def test_chatml_fine_tune_stops_at_im_end(tmp_path):
    save_tiny_mistral(tmp_path, vocab_size=32002)
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<|im_start|>": 32000, "<|im_end|>": 32001}))
    model, tokenizer = load_model(tmp_path, "cpu", hardware=CPU)
    assert tokenizer.chat_template == get_chat_template("chatml")
    assert model.generation_config.eos_token_id == [2, 32001]


def test_qlora_training_step_on_cpu(tiny):
    peft = pytest.importorskip("peft")
    model, tokenizer = load_model(tiny[0], "4bit", hardware=CPU, prepare_for_training=True)
    assert tokenizer.padding_side == "right" and model.config.use_cache is False
    assert _checkpointing(model)
    assert not any(p.requires_grad for p in model.parameters())  # frozen base

    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=PROJECTIONS))
    adapted = [name for name, module in lora.named_modules() if isinstance(module, peft.tuners.lora.LoraLayer)]
    assert len(adapted) == 2 * len(PROJECTIONS) and {name.split(".")[-1] for name in adapted} == set(PROJECTIONS)

    batch = tokenizer(
        ["[INST] hi [/INST] hello</s>", "[INST] a longer question [/INST] ok"], padding=True, return_tensors="pt"
    )
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    trainable = [p for p in lora.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    lora_b = {name: p.detach().clone() for name, p in lora.named_parameters() if "lora_B" in name}
    base = lora.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.detach().clone()
    lora.train()
    loss = lora(**batch, labels=labels).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(lora_b[name], p) for name, p in lora.named_parameters() if "lora_B" in name)
    assert torch.equal(base, lora.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight)


def test_prepare_for_training_without_quantization(tiny):
    model, tokenizer = load_model(tiny[0], "cpu", hardware=CPU, prepare_for_training=True)
    assert _checkpointing(model) and model.config.use_cache is False and tokenizer.padding_side == "right"
    loss = model(**tokenizer(["[INST] hi [/INST] hello"], return_tensors="pt"), labels=None).logits.sum()
    loss.backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad is not None


# issue 20: the LoRA targets of each layout the kit loads. Mixtral under bitsandbytes has per-expert linears w1/w2/w3;
# unquantized it keeps transformers' fused 3-D experts, which peft adapts as parameters.
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
FUSED = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
LORA_LAYOUTS = {
    ("mistral", "4bit"): (PROJECTIONS, None),
    ("mistral", "cpu"): (PROJECTIONS, None),
    ("mixtral", "4bit"): (ATTENTION + ["w1", "w2", "w3"], None),
    ("mixtral", "8bit"): (ATTENTION + ["w1", "w2", "w3"], None),
    ("mixtral", "cpu"): (ATTENTION, FUSED),
}


@pytest.mark.parametrize("kind, preset", list(LORA_LAYOUTS))
def test_lora_config_puts_adapters_on_every_linear_layer_and_the_experts(tiny_checkpoints, kind, preset):
    peft = pytest.importorskip("peft")
    modules, parameters = LORA_LAYOUTS[kind, preset]
    model, _ = load_model(tiny_checkpoints[kind], preset, hardware=CPU, prepare_for_training=True)
    config = lora_config(model, r=4, lora_alpha=8, task_type="CAUSAL_LM")
    assert set(config.target_modules) == set(modules)
    assert getattr(config, "target_parameters", None) == parameters
    lora = peft.get_peft_model(model, config)

    layers, experts = model.config.num_hidden_layers, getattr(model.config, "num_local_experts", 0)
    adapted = [name for name, module in lora.named_modules() if isinstance(module, peft.tuners.lora.LoraLayer)]
    if parameters:  # each fused tensor is wrapped; the wrappers nest on `experts`
        assert sum(name.endswith(".mlp.experts") for name in adapted) == layers
        assert sum(".mlp.experts." in name for name in adapted) == layers  # its `base_layer`: the second tensor
    on_experts = [name for name in adapted if ".experts." in name and name.split(".")[-1] in ("w1", "w2", "w3")]
    assert len(on_experts) == (layers * experts * 3 if "w1" in modules else 0)
    assert not any(name.endswith((".gate", ".lm_head", ".embed_tokens")) for name in adapted)  # not the routers

    # Every adapter of the experts really trains: after a step, each lora_B (zero at first) has moved.
    batch = torch.randint(3, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    lora.train()
    lora(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    expert_b = {name: p for name, p in lora.named_parameters() if "lora_B" in name and ".experts" in name}
    assert bool(expert_b) == (kind == "mixtral")
    assert all(p.abs().sum() > 0 for p in expert_b.values())


def test_lora_config_warns_about_targets_that_match_nothing(tiny_checkpoints):
    pytest.importorskip("peft")
    model, _ = load_model(tiny_checkpoints["mixtral"], "4bit", hardware=CPU, prepare_for_training=True)
    # Mistral's MLP names, the bug of issue 20: on Mixtral they match nothing, and peft only refuses a list where
    # nothing at all matches.
    with pytest.warns(UserWarning, match=r"\['gate_proj', 'up_proj', 'down_proj'\] match nothing") as caught:
        config = lora_config(model, r=4, target_modules=PROJECTIONS)
    (warning,) = caught
    assert "'w1', 'w2', 'w3'" in str(warning.message) and "omit target_modules" in str(warning.message)
    assert set(config.target_modules) == set(PROJECTIONS)  # the caller's list, kept
    assert warning.filename == __file__  # points at the caller

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lora_config(model, r=4, target_modules=["q_proj", "experts.0.w1", "model.layers.1.self_attn.o_proj"])
        lora_config(model, r=4, target_modules="all-linear")


def test_lora_config_on_fused_experts_refuses_dropout_and_names_the_fix(tiny_checkpoints):
    pytest.importorskip("peft")
    model, _ = load_model(tiny_checkpoints["mixtral"], "cpu", hardware=CPU)
    with pytest.raises(ValueError, match=r"lora_dropout=0.05: .* Pass lora_dropout=0, or load with preset '4bit'"):
        lora_config(model, r=4, lora_dropout=0.05)
    with pytest.warns(UserWarning, match=r"\['experts.gate_proj'\] match nothing"):
        lora_config(model, r=4, target_modules=["q_proj"], target_parameters=["experts.gate_proj"])
    # Unless given, the dropout is QLoRA's where the targets take it, 0 where experts are fused.
    assert lora_config(model, r=4).lora_dropout == 0.0
    quantized, _ = load_model(tiny_checkpoints["mixtral"], "4bit", hardware=CPU)
    assert lora_config(quantized, r=4).lora_dropout == 0.05
    # target_modules alone ("all-linear" included) reach linear layers only: the fused experts would get nothing.
    for targets in ("all-linear", ["q_proj", "v_proj"]):
        with pytest.warns(
            UserWarning, match=r"keeps its experts fused .* the experts get no adapter. Add target_param"
        ):
            lora_config(model, r=4, target_modules=targets)


# issue 20: a 4-bit load prints nothing the user did not ask for. bitsandbytes asks the kernel hub for an optional CPU
# kernel when imported (on CPUs with AVX512-BF16) and warns when it cannot have it; transformers 5.25 deprecates the
# `gradient_checkpointing_enable` that peft's prepare_model_for_kbit_training calls.
QUIET_LOAD = """
import sys
import hf_mistral_kit as kit
if sys.argv[3] == "auto":
    kit.AutoModelForCausalLM.from_pretrained(sys.argv[1], preset=sys.argv[2])
elif sys.argv[3] == "lora":  # peft (and with it bitsandbytes) imported by lora_config, after an unquantized load
    kit.lora_config(kit.load_model(sys.argv[1], preset=sys.argv[2], prepare_for_training=True)[0], r=4)
else:
    kit.load_model(sys.argv[1], preset=sys.argv[2], prepare_for_training=sys.argv[3] == "1")
print("loaded")
"""


@pytest.mark.parametrize(
    "preset, prepare, offline",
    [
        ("4bit", False, False),
        ("4bit", True, True),
        ("8bit", True, False),
        ("4bit", "auto", False),
        ("cpu", "lora", False),
    ],
    ids=["4bit", "4bit-prepare_for_training-HF_HUB_OFFLINE", "8bit-prepare_for_training", "AutoModel-4bit", "cpu-lora"],
)
def test_a_quantized_load_prints_no_warning(tiny_checkpoints, preset, prepare, offline):
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            QUIET_LOAD,
            str(tiny_checkpoints["mistral"]),
            preset,
            str(prepare if isinstance(prepare, str) else int(prepare)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout == "loaded\n", result.stderr
    assert _noise(result.stderr) == []


def _noise(stderr: str) -> list[str]:
    """stderr's lines but transformers' "Loading weights" progress bar."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "Loading weights" not in line]


def test_auto_on_the_detected_machine(tiny, input_ids):
    path, reference = tiny
    model, tokenizer = load_model(path)  # preset "auto", Hardware.detect()
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<unk>"
    assert cosine(logits(model, input_ids.to(model.device)).cpu(), logits(reference, input_ids)) > 0.999


def _checkpointing(model) -> bool:
    """Whether activation checkpointing is on (the property's name changed within transformers 5.x)."""
    return any(getattr(module, "gradient_checkpointing", False) for module in model.modules())


# issue 21: multi-head latent attention, shared and routed experts are targets; the attention indexer and a
# vision-language model's vision tower and projector are not.
LATENT = ["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]  # dense layers and shared experts
NEW_LAYOUTS = {
    ("mistral4", "4bit"): (LATENT + MLP + ["w1", "w2", "w3"], None),
    ("mistral4", "cpu"): (LATENT + MLP, FUSED),
    ("mistral_large4", "4bit"): (["q_proj"] + LATENT[2:] + MLP + ["w1", "w2", "w3"], None),
    ("mistral3", "4bit"): (PROJECTIONS, None),  # the text model
}


def _new_layouts():
    from tiny_configs import available

    return [
        pytest.param(kind, preset, marks=[] if available(kind) else [pytest.mark.skip(f"transformers lacks {kind}")])
        for kind, preset in NEW_LAYOUTS
    ]


@pytest.mark.parametrize("kind, preset", _new_layouts())
def test_lora_config_on_the_2025_26_architectures(kind, preset):
    peft = pytest.importorskip("peft")
    from hf_mistral_kit import tiny_model

    modules, parameters = NEW_LAYOUTS[kind, preset]
    # MLA sizes bitsandbytes' CPU 4-bit kernel takes (kv_a_proj_with_mqa: kv_lora_rank + qk_rope_head_dim rows).
    sizes = {"kv_lora_rank": 64, "qk_rope_head_dim": 32} if kind in ("mistral4", "mistral_large4") else {}
    sizes |= {"index_head_dim": 32} if kind == "mistral_large4" else {}  # at least qk_rope_head_dim
    model, _ = load_model(tiny_model(kind, **sizes), preset, hardware=CPU, prepare_for_training=True)
    config = lora_config(model, r=4, lora_alpha=8, task_type="CAUSAL_LM")
    assert set(config.target_modules) == set(modules)
    assert getattr(config, "target_parameters", None) == parameters
    lora = peft.get_peft_model(model, config)
    adapted = [name for name, module in lora.named_modules() if isinstance(module, peft.tuners.lora.LoraLayer)]
    assert set(modules) <= {name.split(".")[-1] for name in adapted}
    assert not [name for name in adapted if any(part in name for part in ("vision", "projector", "indexer"))]
    assert not any(name.endswith((".gate", ".lm_head", ".embed_tokens")) for name in adapted)

    batch = torch.randint(3, 300, (2, 8), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    lora.train()
    lora(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    moved = {
        name.split(".lora_B")[0].rsplit(".", 1)[-1]
        for name, p in lora.named_parameters()
        if "lora_B" in name and p.abs().sum() > 0
    }
    assert set(modules) <= moved | {"base_layer", "experts"}, set(modules) - moved
