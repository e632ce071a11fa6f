"""tiny_model: deterministic, cached, both layouts, the real tokenizer; AutoTokenizer routing on such directories."""

import filecmp
import time

import pytest
import torch
import transformers
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

import hf_mistral_kit as kit
from hf_mistral_kit import MistralSentencePieceTokenizer, get_chat_template, reference_tokenizer_file


@torch.no_grad()
def logits(model):
    ids = torch.randint(0, model.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(0))
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
    assert filecmp.cmp(hf / "tokenizer.model.v1", reference_tokenizer_file("v1"), shallow=False)
    assert filecmp.cmp(native / "tokenizer.model.v1", reference_tokenizer_file("v1"), shallow=False)

    model = kit.AutoModelForCausalLM.from_pretrained(hf)
    assert model.config.vocab_size == 32000 and model.config.num_key_value_heads < model.config.num_attention_heads
    assert model.generation_config.eos_token_id == 2
    torch.testing.assert_close(
        logits(kit.AutoModelForCausalLM.from_pretrained(native)), logits(model), atol=1e-5, rtol=0
    )


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
    hf = kit.tiny_model("mistral", tmp_path / "hf")
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
