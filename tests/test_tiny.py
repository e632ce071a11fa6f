"""tiny_model: deterministic, both layouts, the real tokenizer, AutoTokenizer routing on such directories; builds cached
by their arguments (nothing new in /tmp per call), and a damaged cached build rebuilt with a warning (the demo prints it
as a note)."""

from __future__ import annotations

import filecmp
import json
import os
import re
import tempfile
import time

import pytest
import torch
import transformers
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

import hf_mistral_kit as kit
from hf_mistral_kit import MistralSentencePieceTokenizer, get_chat_template, reference_tokenizer_file
from hf_mistral_kit.architectures import find_architecture
from hf_mistral_kit.cli.demo import tiny_checkpoint
from hf_mistral_kit.tiny import DEFAULT_TOKENIZERS, KINDS, STAMP_FILE, teach


@torch.no_grad()
def logits(model):
    vocab_size = model.config.get_text_config().vocab_size
    ids = torch.randint(0, vocab_size, (1, 9), generator=torch.Generator().manual_seed(0))
    return model(ids).logits


@pytest.mark.parametrize("kind", ["mistral", "mixtral"])
def test_tiny_model_is_deterministic_in_both_layouts(kind, tmp_path):
    rng_before = torch.get_rng_state()
    hf = kit.tiny_model(kind, tmp_path / "hf", seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched
    again = kit.tiny_model(kind, tmp_path / "again", seed=3)
    other_seed = kit.tiny_model(kind, tmp_path / "other", seed=4)
    native = kit.tiny_model(kind, tmp_path / "native", seed=3, native=True)

    assert filecmp.cmp(hf / "model.safetensors", again / "model.safetensors", shallow=False)
    assert not filecmp.cmp(hf / "model.safetensors", other_seed / "model.safetensors", shallow=False)
    assert (native / "params.json").is_file() and not (native / "config.json").exists()
    # issue 20: the default tokenizer is the kind's (`DEFAULT_TOKENIZERS`, the demo's too): v3 for Mistral-7B-Instruct
    # v0.3, v1 for Mixtral-8x7B-Instruct-v0.1.
    version, vocab_size = {"mistral": ("v3", 32768), "mixtral": ("v1", 32000)}[kind]
    assert DEFAULT_TOKENIZERS[kind] == version
    assert filecmp.cmp(hf / f"tokenizer.model.{version}", reference_tokenizer_file(version), shallow=False)
    assert filecmp.cmp(native / f"tokenizer.model.{version}", reference_tokenizer_file(version), shallow=False)

    model = kit.AutoModelForCausalLM.from_pretrained(hf)
    assert model.config.vocab_size == vocab_size
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    assert model.generation_config.eos_token_id == 2
    torch.testing.assert_close(
        logits(kit.AutoModelForCausalLM.from_pretrained(native)), logits(model), atol=1e-5, rtol=0
    )


# The 2025-26 architectures (issue 21): mistral_large4 only where transformers has it (5.2x; not 5.10).
NEW_KINDS = [
    pytest.param(
        kind,
        marks=pytest.mark.skipif(
            kind not in transformers.models.auto.configuration_auto.CONFIG_MAPPING_NAMES,
            reason=f"transformers {transformers.__version__} has no {kind}",
        ),
    )
    for kind in KINDS
    if kind not in ("mistral", "mixtral")
]


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_tiny_model_of_every_architecture_loads_in_plain_transformers(kind, tmp_path):
    path = kit.tiny_model(kind, tmp_path / "a")
    config = json.loads((path / "config.json").read_text())
    architecture = find_architecture(kind)
    assert config["model_type"] == kind and config["architectures"] == [architecture.causal_lm]
    # Each kind's tokenizer: tekken v11 for Mistral Small 3.2's layout, v15 for Mistral Small 4's, else Nemo's v3.
    version = {"mistral3": "v11", "mistral4": "v15"}.get(kind, "v3")
    assert kit.load_tokenizer(path).mistral_version == version
    assert json.loads((path / "tekken.json").read_text())["config"]["version"] == version
    model = getattr(transformers, architecture.causal_lm).from_pretrained(path)
    text_config = model.config.get_text_config()
    assert text_config.num_hidden_layers == 2 and text_config.vocab_size == 131072
    if architecture.vision:  # beside a vision tower, the text model is the one its text_config names
        assert model.model.vision_tower is not None and text_config.model_type != kind
    if architecture.experts:  # a dense layer, then a layer of routed experts and a shared one
        assert text_config.first_k_dense_replace == 1 and text_config.n_shared_experts == 1
    # Deterministic: the same seed gives the same weights.
    again = kit.tiny_model(kind, tmp_path / "b")
    assert filecmp.cmp(path / "model.safetensors", again / "model.safetensors", shallow=False)
    torch.testing.assert_close(logits(type(model).from_pretrained(again)), logits(model))


def test_tiny_model_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of 'mistral', 'mixtral', 'ministral'"):
        kit.tiny_model("llama")


def test_tiny_model_reuses_an_identical_build_and_refuses_foreign_directories(tmp_path):
    path = kit.tiny_model("mistral", tmp_path / "cache", sliding_window=8)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    time.sleep(0.01)
    assert kit.tiny_model("mistral", path, sliding_window=8) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    assert kit.AutoConfig.from_pretrained(path).sliding_window == 8
    with pytest.raises(FileExistsError, match="does not hold this tiny model"):
        kit.tiny_model("mistral", path, sliding_window=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no staging directory left behind


def test_tiny_model_without_path_and_with_v3_tokenizer():
    path = kit.tiny_model("mixtral", tokenizer="v3", num_local_experts=2)
    assert filecmp.cmp(path / "tokenizer.model.v3", reference_tokenizer_file("v3"), shallow=False)
    config = kit.AutoConfig.from_pretrained(path)
    assert config.vocab_size == 32768 and config.num_local_experts == 2


def test_auto_tokenizer_routes_mistral_files_to_load_tokenizer(tmp_path):
    hf = kit.tiny_model("mistral", tmp_path / "hf", tokenizer="v1")
    native = kit.tiny_model("mistral", tmp_path / "native", native=True, tokenizer="v3")
    for path, version in ((hf, "v1"), (native, "v3"), (native / "tokenizer.model.v3", "v3")):
        tokenizer = kit.AutoTokenizer.from_pretrained(path, padding_side="left")
        assert isinstance(tokenizer, MistralSentencePieceTokenizer)
        assert tokenizer.padding_side == "left"
        assert tokenizer.chat_template == get_chat_template(f"mistral_{version}")
        assert len(tokenizer) == (32000 if version == "v1" else 32768)
    # Tokenizer arguments apply as with transformers' AutoTokenizer.
    no_bos = kit.AutoTokenizer.from_pretrained(hf, add_bos_token=False, pad_token="<unk>", model_max_length=64)
    assert no_bos("hi")["input_ids"] == kit.AutoTokenizer.from_pretrained(hf)("hi")["input_ids"][1:]
    assert (no_bos.pad_token, no_bos.model_max_length) == ("<unk>", 64)
    with pytest.raises(TypeError, match="keyword arguments only"):
        kit.AutoTokenizer.from_pretrained(hf, "positional")

    # A directory with Hugging Face tokenizer files only goes to transformers.
    vocab = {"<unk>": 0, "hello": 1}
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")))
    fast.save_pretrained(tmp_path / "plain")
    assert not isinstance(kit.AutoTokenizer.from_pretrained(tmp_path / "plain"), MistralSentencePieceTokenizer)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MISTRAL_KIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_builds_without_a_path_are_cached_by_their_arguments(cache):
    before = set(os.listdir(tempfile.gettempdir()))
    path = kit.tiny_model("mistral", sliding_window=8)
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert path.parent == cache / "tiny" and path.name.startswith("mistral-")
    assert kit.tiny_model("mistral", sliding_window=8) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rebuilt
    other = kit.tiny_model("mistral", sliding_window=16)
    assert other != path and kit.AutoConfig.from_pretrained(other).sliding_window == 16
    native = kit.tiny_model("mistral", native=True, sliding_window=8)
    assert native not in (path, other) and (native / "params.json").is_file()
    assert set(os.listdir(tempfile.gettempdir())) == before  # nothing left in /tmp
    assert sorted(p.name for p in (cache / "tiny").iterdir()) == sorted(p.name for p in (path, other, native))


@pytest.mark.parametrize("damage", ["truncate", "delete", "add", "header", "old-stamp"])
def test_a_damaged_build_is_rebuilt_with_a_warning(cache, tmp_path, damage):
    path = kit.tiny_model("mixtral", native=True)
    weights = path / "consolidated.safetensors"
    intact = tmp_path / "intact.safetensors"
    intact.write_bytes(weights.read_bytes())
    if damage == "truncate":
        os.truncate(weights, weights.stat().st_size // 2)
    elif damage == "delete":
        (path / "tokenizer.model.v1").unlink()
    elif damage == "add":  # a caller saved something into the shared build
        (path / "notes.txt").write_text("{}")
    elif damage == "header":  # same size, header no longer JSON
        with open(weights, "r+b") as stream:
            stream.seek(8)
            stream.write(b"\xff\xfe")
    else:  # a stamp written by a kit that recorded no files
        stamp = json.loads((path / STAMP_FILE).read_text())
        del stamp["files"]
        (path / STAMP_FILE).write_text(json.dumps(stamp))
    with pytest.warns(UserWarning, match="cached tiny mixtral in .* was incomplete or damaged"):
        assert kit.tiny_model("mixtral", native=True) == path
    assert filecmp.cmp(weights, intact, shallow=False) and (path / "tokenizer.model.v1").is_file()
    assert not (path / "notes.txt").exists() and (path / "tokenizer.json").is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging folder left


def test_the_demo_heals_its_cache_with_a_note(tmp_path, capsys):
    path = tiny_checkpoint("mistral", root=tmp_path)
    os.truncate(path / "model.safetensors", 1000)
    capsys.readouterr()
    assert tiny_checkpoint("mistral", root=tmp_path) == path
    last = capsys.readouterr().err.splitlines()[-1]  # after transformers' progress bars
    assert last.startswith("note: the cached tiny mistral in") and last.endswith("rebuilt it.")
    assert kit.AutoModelForCausalLM.from_pretrained(path).config.vocab_size == 32768


# issue 18: teach() makes a tiny model reply as told (tool calls and thinking included), so demos of reading replies
# back run on tokens that really come out of `generate`; tiny_model(tokenizer=<file>) builds one on any Mistral file.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_CALL = {
    "id": "call00001",
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
}
AGENT_LOOP = [
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "tool_calls": [WEATHER_CALL]},
    {"role": "tool", "tool_call_id": "call00001", "content": json.dumps({"sky": "snow", "celsius": -3})},
    {"role": "assistant", "content": "It snows in Oslo, -3 °C."},
]
GREETING = [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}]


def greedy_replies(path, conversation, tools=None):
    """(prompt ids, generated ids) after each assistant message's prompt, with plain transformers' model class."""
    model = transformers.AutoModelForCausalLM.from_pretrained(path) if (path / "config.json").is_file() else None
    model = model or kit.AutoModelForCausalLM.from_pretrained(path)
    tokenizer = kit.load_tokenizer(path)
    replies = []
    for index, message in enumerate(conversation):
        if message["role"] == "assistant":
            prompt = tokenizer.apply_chat_template(
                conversation[:index], tools=tools, add_generation_prompt=True, return_dict=True, return_tensors="pt"
            )["input_ids"]
            output = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=48)
            replies.append((tokenizer, prompt[0], output[0], message))
    return replies


def test_teach_makes_generate_write_each_reply_of_an_agent_loop(tmp_path):
    path = kit.tiny_model("mistral", tmp_path / "taught", tokenizer="v3")
    assert teach(path, [AGENT_LOOP], [WEATHER_TOOL]) == path
    call, answer = greedy_replies(path, AGENT_LOOP, [WEATHER_TOOL])
    tokenizer, prompt, output, _ = call
    assert kit.parse_response(tokenizer, output, prompt, tools=[WEATHER_TOOL]) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [WEATHER_CALL],
    }
    tokenizer, prompt, output, _ = answer
    assert tokenizer.decode(output[len(prompt) :]) == "It snows in Oslo, -3 °C.</s>"
    assert kit.parse_response(tokenizer, output, prompt)["content"] == "It snows in Oslo, -3 °C."
    # The folder is no longer the untouched tiny model its record described.
    with pytest.raises(FileExistsError, match="does not hold this tiny model"):
        kit.tiny_model("mistral", path, tokenizer="v3")


def test_teach_is_deterministic_keeps_the_layout_and_leaves_the_callers_rng_alone(tmp_path):
    first = kit.tiny_model("mistral", tmp_path / "first")
    second = kit.tiny_model("mistral", tmp_path / "second")
    native = kit.tiny_model("mistral", tmp_path / "native", native=True)
    rng_before = torch.get_rng_state()
    for path in (first, second, native):
        teach(path, [GREETING])
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert filecmp.cmp(first / "model.safetensors", second / "model.safetensors", shallow=False)
    # The native folder stays native (no Hugging Face files added), and replies as taught too.
    assert (native / "consolidated.safetensors").is_file() and not (native / "config.json").exists()
    for path in (first, native):
        ((tokenizer, prompt, output, _),) = greedy_replies(path, GREETING)
        assert tokenizer.decode(output[len(prompt) :]) == "Hello!</s>"


def test_teach_refuses_shared_builds_and_says_when_it_did_not_converge(tmp_path, cache):
    with pytest.raises(ValueError, match="shared tiny_model build"):
        teach(kit.tiny_model("mistral"), [GREETING])
    path = kit.tiny_model("mistral", tmp_path / "model")
    before = {file.name: file.read_bytes() for file in path.iterdir()}
    with pytest.raises(
        RuntimeError, match=r"did not learn its replies in 1 steps .* writes '.*' instead of 'Hello!</s>'"
    ):
        teach(path, [GREETING], steps=1)
    assert {file.name: file.read_bytes() for file in path.iterdir()} == before  # left as it was
    with pytest.raises(ValueError, match="0 assistant message"):
        teach(path, [GREETING[:1]])


def test_tiny_model_takes_a_tokenizer_file_and_caches_it_by_contents(cache, mistral_file, tmp_path):
    v13 = mistral_file("tekken-v13")
    path = kit.tiny_model("mistral", tokenizer=v13)
    assert filecmp.cmp(path / "tekken.json", v13, shallow=False)  # under the name transformers and vLLM look for
    tokenizer = kit.load_tokenizer(path)
    assert tokenizer.mistral_version == "v13" and "[THINK]" in tokenizer.get_vocab()
    assert kit.AutoConfig.from_pretrained(path).vocab_size == len(tokenizer) == 131072
    copy = tmp_path / "elsewhere" / "tekken-copy.json"
    copy.parent.mkdir()
    copy.write_bytes(v13.read_bytes())
    assert kit.tiny_model("mistral", tokenizer=copy) == path  # the same contents: the same cached build
    with pytest.raises(ValueError, match=r"must be one of v1, v2, v3, v7, tekken, got '.*missing.json', which is no"):
        kit.tiny_model("mistral", tokenizer=tmp_path / "missing.json")


def test_tiny_model_has_a_kind_for_every_architecture():
    from hf_mistral_kit.architectures import ARCHITECTURES

    assert set(KINDS) == set(DEFAULT_TOKENIZERS) == {row.model_type for row in ARCHITECTURES}
    if "mistral_large4" not in transformers.models.auto.configuration_auto.CONFIG_MAPPING_NAMES:
        installed = re.escape(f"installed transformers {transformers.__version__} does not")
        with pytest.raises(ValueError, match=installed + r": pip install -U 'transformers>=5\.25'"):
            kit.tiny_model("mistral_large4")
