"""benchmarks/gpu_presets.py: its CPU-checkable parts (the model builder, the no-CUDA exit)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from transformers import MistralConfig
from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding

from hf_mistral_kit import Hardware, resolve_preset

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_presets.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("gpu_presets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exits_with_a_clear_message_without_cuda():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "needs a CUDA GPU; none is available here." in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "preset, linear", [("cpu", torch.nn.Linear), ("4bit", bnb.nn.Linear4bit), ("8bit", bnb.nn.Linear8bitLt)]
)
def test_builds_a_random_model_off_meta_with_the_preset(benchmark, preset, linear):
    config = MistralConfig(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    resolved = resolve_preset(preset, Hardware.profile("cpu"))
    model = benchmark.build_model(config, resolved, device="cpu")
    assert isinstance(model.model.layers[1].mlp.down_proj, linear)
    assert type(model.lm_head) is torch.nn.Linear
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, MistralRotaryEmbedding(config).inv_freq)
    ids = torch.randint(3, 1000, (1, 5))
    out = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, 9) and torch.isfinite(model(ids).logits).all()
