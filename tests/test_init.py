"""issue 10: `import hf_mistral_kit`, `--help` and `render` stay light (no torch, no modeling code); the public API and
the registration of the kit's model types still work as when everything was imported eagerly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import hf_mistral_kit as kit

# What must not be imported by the light paths: torch, and transformers' model or modeling code.
HEAVY = ("torch", "transformers.modeling_utils", "transformers.models.mistral", "transformers.models.mixtral")
KIT_HEAVY = (
    "hf_mistral_kit.modeling",
    "hf_mistral_kit.formats",
    "hf_mistral_kit.planning",
    "hf_mistral_kit.tokenizers",
)

# Runs `steps` in a fresh interpreter and prints the modules loaded after each one.
PROBE = """
import json, sys
steps = json.loads(sys.argv[1])
report = {}
for name, code in steps:
    try:
        exec(code)
    except SystemExit as exit:
        assert exit.code in (0, None), exit.code
    report[name] = sorted(sys.modules)
sys.stdout.flush()
sys.__stdout__.write("\\nMODULES " + json.dumps(report) + "\\n")
"""


def loaded_modules(tmp_path: Path, *steps: tuple[str, str]) -> tuple[dict[str, list[str]], str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(steps)], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    out, _, report = result.stdout.rpartition("\nMODULES ")
    return json.loads(report), out


def heavy(modules: list[str]) -> list[str]:
    # planning's own __init__ holds only the default context that `--help` shows; its modules are heavy.
    light = {"hf_mistral_kit.planning"}
    return [m for m in modules if m not in light and any(m == h or m.startswith(h + ".") for h in HEAVY + KIT_HEAVY)]


def test_import_help_and_render_load_neither_torch_nor_modeling_code(tmp_path):
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"role": "user", "content": "Hello"}]), encoding="utf-8")
    report, out = loaded_modules(
        tmp_path,
        ("import", "import hf_mistral_kit"),
        ("help", "from hf_mistral_kit.cli import main; main(['--help'])"),
        ("render", f"from hf_mistral_kit.cli import main; main(['render', {str(chat)!r}])"),
    )
    assert "usage: hf-mistral-kit" in out and out.rstrip().endswith("<s>[INST] Hello [/INST]")  # both really ran
    for step in ("import", "help", "render"):
        assert heavy(report[step]) == [], step
    assert "torch" not in report["render"] and "hf_mistral_kit.chat.templates" in report["render"]
    assert not any(m.startswith("transformers") for m in report["help"])  # --help needs nothing but argparse


def test_the_public_api_is_unchanged_and_resolves_lazily():
    # the 33 names from before the package became lazy, the conversation contract's three, GGUF's two, the
    # tekken tokenizer's two (its class and the base it shares with the SentencePiece one), parse_response and the
    # error of a tokenizer file that cannot be loaded or cannot encode (issue 19), the LoRA settings (issue 20), the
    # vision-language Auto class (issue 21)
    assert len(kit.__all__) == len(set(kit.__all__)) == 44
    added = {"ConversationError", "ValidationMode", "prepare_chat", "GGUFError", "load_gguf_tokenizer"}
    added |= {"MistralTekkenTokenizer", "MistralTokenizerBase", "parse_response", "TokenizerFileError"}
    added |= {"lora_config", "AutoModelForImageTextToText"}
    assert added <= set(kit.__all__)
    assert set(kit.__all__) == set(kit._EXPORTS)
    for name in kit.__all__:
        value = getattr(kit, name)
        assert getattr(value, "__name__", name) == name or name == "PRESETS"
    assert set(kit.__all__) <= set(dir(kit))
    from hf_mistral_kit import AutoModelForCausalLM, render  # from-imports go through __getattr__ too

    assert AutoModelForCausalLM is kit.auto.AutoModelForCausalLM and render is kit.chat.templates.render
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        kit.no_such_name  # noqa: B018


def test_registration_happens_before_a_kit_auto_class_resolves(tmp_path):
    """In a fresh process, the first thing done is loading a native checkpoint through the kit's AutoConfig (which
    resolves the kit's own model type) and a kit-typed config through transformers' Auto classes."""
    path = kit.tiny_model("mistral", native=True)
    code = f"""
import transformers, hf_mistral_kit as kit
config = kit.AutoConfig.from_pretrained({str(path)!r})
assert type(config).__name__ == "KitMistralConfig", type(config)
model = transformers.AutoModelForCausalLM.from_config(config)
assert type(model).__name__ == "KitMistralForCausalLM", type(model)
assert transformers.AutoConfig.for_model("hf_mistral_kit_mixtral").__class__.__name__ == "KitMixtralConfig"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
