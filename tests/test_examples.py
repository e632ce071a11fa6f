"""The examples and the README's Python quickstart run offline on the tiny models, so they cannot rot."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import hf_mistral_kit as kit

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DATA = Path(__file__).parent / "data"


def run_example(name: str, *args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_mirrors_the_model_card(cli_env, tiny_checkpoints, tmp_path):
    quickstart = load_example("quickstart.py")
    path = tiny_checkpoints["mistral"]
    result = run_example("quickstart.py", "--model", str(path), "--max-new-tokens", "8", env=cli_env, cwd=tmp_path)
    tokenizer = kit.load_tokenizer(path)
    prompt = tokenizer.apply_chat_template(quickstart.MESSAGES, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<s>[INST] What is your favourite condiment?[/INST]")  # the v3 format
    # batch_decode(generated_ids)[0], as on the card: the prompt, then what was sampled.
    (printed,) = [line for line in result.stdout.splitlines() if line.startswith("<s>")]
    assert printed.startswith(prompt) and len(printed) > len(prompt)
    assert "preset: auto -> " in result.stdout

    # Without --model it builds its own tiny model, and says the weights are random.
    default = run_example("quickstart.py", "--max-new-tokens", "4", env=cli_env, cwd=tmp_path)
    assert "RANDOM weights" in default.stdout and "<s>[INST]" in default.stdout


def test_openorca_chatml_prints_the_cards_prompt(cli_env, tiny_checkpoints, tmp_path):
    expected = (DATA / "openorca_chatml_expected.txt").read_text(encoding="utf-8")
    result = run_example("openorca_chatml.py", "--model", str(tiny_checkpoints["mistral"]), env=cli_env, cwd=tmp_path)
    assert result.stdout.startswith(expected)
    assert "added <|im_start|>/<|im_end|>" in result.stdout and "\nassistant: " in result.stdout

    # An OpenOrca-style checkpoint (v1 tokenizer + the two ChatML tokens it added) is used as it is.
    orca = kit.tiny_model("mistral", path=tmp_path / "orca", tokenizer="v1", vocab_size=32002)
    (orca / "added_tokens.json").write_text(json.dumps({"<|im_end|>": 32000, "<|im_start|>": 32001}))
    result = run_example("openorca_chatml.py", "--model", str(orca), env=cli_env, cwd=tmp_path)
    assert result.stdout.startswith(expected) and "added" not in result.stdout


# Mistral's linear layers: attention (q/k/v/o) and the SwiGLU MLP (gate/up/down); each Mixtral expert's are w1/w2/w3.
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MISTRAL_TARGETS = [*ATTENTION, "gate_proj", "up_proj", "down_proj"]
MIXTRAL_TARGETS = [*ATTENTION, "w1", "w2", "w3"]


def test_qlora_finetune_trains_adapters_on_assistant_tokens_only(cli_env, tiny_checkpoints, tmp_path):
    from safetensors.torch import load_file

    qlora = load_example("qlora_finetune.py")
    path = tiny_checkpoints["mistral"]
    adapter = tmp_path / "adapter"
    result = run_example(
        "qlora_finetune.py", "--model", str(path), "--steps", "3", "--output", str(adapter), env=cli_env, cwd=tmp_path
    )
    losses = [float(m) for m in re.findall(r"step \d/3\s+loss (\d+\.\d+)", result.stdout)]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    assert "trainable params: 19,456 " in result.stdout  # r=8 on 7 projections x 2 layers
    assert "quantized base layers: {'Linear4bit': 14}" in result.stdout  # 7 projections x 2 layers, all in NF4
    assert "gemm_4bit_forward" not in result.stderr  # issue 20: bitsandbytes' optional kernel is a note, not noise

    config = json.loads((adapter / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == set(MISTRAL_TARGETS)
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in weights.items() if "lora_B" in name]
    assert len(lora_b) == 2 * len(MISTRAL_TARGETS)  # 2 layers
    assert all(tensor.abs().sum() > 0 for tensor in lora_b)  # LoRA B starts at zero: the steps did train

    # The labels are exactly the assistant's tokens (its text and the closing </s>), the rest is ignored.
    tokenizer = kit.load_tokenizer(path)
    chats = qlora.conversations()
    batch = qlora.build_batch(tokenizer, chats)
    for labels, ids, chat in zip(batch["labels"], batch["input_ids"], chats, strict=True):
        trained = labels[labels != qlora.IGNORE_INDEX].tolist()
        assert tokenizer.decode(trained) == chat[1]["content"] + "</s>"
        assert trained == ids[labels != qlora.IGNORE_INDEX].tolist()
    assert f"loss on {int((batch['labels'] != -100).sum())} assistant tokens" in result.stdout


def test_qlora_finetune_on_mixtral_trains_the_experts(cli_env, tiny_checkpoints, tmp_path):
    """issue 20: Mistral's MLP names match nothing in a 4-bit Mixtral (its experts are `experts.N.w1/w2/w3`), so QLoRA
    trained the attention only (10,240 parameters); the example now asks the kit for the model's own names."""
    from safetensors.torch import load_file

    adapter = tmp_path / "adapter"
    path = tiny_checkpoints["mixtral"]
    result = run_example(
        "qlora_finetune.py", "--model", str(path), "--steps", "2", "--output", str(adapter), env=cli_env, cwd=tmp_path
    )
    # 4 attention projections x 2 layers, and w1/w2/w3 of 4 experts x 2 layers: all in NF4, all adapted.
    assert "quantized base layers: {'Linear4bit': 32}" in result.stdout
    assert "trainable params: 47,104 " in result.stdout  # 10,240 on the attention + 36,864 on the experts
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == set(MIXTRAL_TARGETS)
    weights = load_file(adapter / "adapter_model.safetensors")
    experts = {
        name.split(".experts.")[1].split(".lora")[0] for name in weights if "lora_B" in name and ".experts." in name
    }
    assert experts == {f"{expert}.{w}" for expert in range(4) for w in ("w1", "w2", "w3")}
    assert not any(".gate." in name for name in weights)  # the routers are not adapted


def test_use_cases_notebook_runs(tiny_checkpoints, monkeypatch, tmp_path):
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    # ipykernel installs its "python3" spec into the environment; jupyter_client runs it with this interpreter.
    assert "python3" in KernelSpecManager().find_kernel_specs()
    monkeypatch.setenv("HF_MISTRAL_KIT_MODEL", str(tiny_checkpoints["mistral"]))
    monkeypatch.setenv("MAX_NEW_TOKENS", "8")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    notebook = nbformat.read(EXAMPLES / "use_cases.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed clean
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    # issue 20: no warning the reader did not cause (tqdm's "IProgress not found" without ipywidgets was one).
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    stderr = "".join(output.get("text", "") for output in outputs if output.get("name") == "stderr")
    assert "Warning" not in stderr and "warn" not in stderr, stderr
    assert str(tiny_checkpoints["mistral"]) in text
    assert "<s>[INST] ...[/INST]" in text  # the template around an instruction
    assert "French: " in text and "Spanish: " in text
    assert "extracted: " in text
    # Tool calling, on a tiny model taught the two replies: the call, the tool's result, then the answer, all read
    # back from generated ids.
    assert "'tool_calls': [{'id': 'call00001', 'type': 'function', 'function': {'name': 'get_weather'" in text
    assert "tool: get_weather({'city': 'Paris'}) -> {'sky': 'sunny', 'temperature_c': 18}" in text
    assert "answer: It is sunny in Paris: 18 degrees Celsius." in text


def readme_python_blocks() -> list[str]:
    """The ```python blocks of the README's own sections (below "## Command line"): they must run as written."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ours = readme[readme.index("\n## Command line") :]
    return re.findall(r"```python\n(.*?)```", ours, flags=re.DOTALL)


def test_readme_python_quickstart_runs(cli_env, tmp_path):
    blocks = readme_python_blocks()
    assert blocks
    env = {**cli_env, "TMPDIR": str(tmp_path)}  # tiny_model() without a path builds in a temporary directory
    for block in blocks:
        result = subprocess.run(
            [sys.executable, "-c", block], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{block}\n{result.stderr}"
        assert "[INST]" in result.stdout


def test_tool_calling_runs_the_agent_loop_on_generated_replies(cli_env, tmp_path):
    tool_calling = load_example("tool_calling.py")
    result = run_example("tool_calling.py", env=cli_env, cwd=tmp_path)
    lines = result.stdout.splitlines()
    parsed = [json.loads(line.removeprefix("parse_response -> ")) for line in lines if line.startswith("parse_resp")]
    # The generated ids read back: first the call (with the id the v3 format writes), then the answer.
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert parsed[0] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call00001", "type": "function", "function": call}],
    }
    assert parsed[1] == {"role": "assistant", "content": "It is sunny in Paris: 18 degrees Celsius."}
    # The tool really ran on the parsed arguments, and the answer ends the loop.
    assert 'tool call: get_weather({"city": "Paris"}) -> {"sky": "sunny", "temperature_c": 18}' in lines
    assert lines[-1] == "answer: It is sunny in Paris: 18 degrees Celsius."
    # A v13 call has no id: the loop gives it one, which its result points at.
    v13_call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    (result,) = tool_calling.run_tool_calls({"role": "assistant", "content": None, "tool_calls": [v13_call]})
    assert result == {"role": "tool", "tool_call_id": v13_call["id"], "content": '{"sky": "snow", "temperature_c": -3}'}
