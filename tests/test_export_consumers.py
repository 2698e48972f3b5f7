"""Exports that behave in every consumer (issue 29): config.json's tie flags say what the weights are, a decoder's
exported tokenizer encodes a prompt as transformers' own tokenizer of the family does (GPT-2: nothing added, Llama:
BOS only), tokenizer_config.json names a class transformers 4.x has too, and generation from a prompt continues it
on tiny models trained on a predictable corpus. (Loading in transformers 4.x itself: benchmarks/export_compat.py.)"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from models import ModelConfig, Transformer
from models.convert import to_transformers

TINY = dict(d_model=32, n_layers=1, n_heads=2, d_ff=64, vocab_size=60, max_seq_len=32)
TIE_CASES = [("bert", True), ("bert", False), ("electra", False), ("gpt2", True), ("gpt2", False), ("llama", True),
             ("llama", False), ("bart", True), ("bart", False), ("t5", True), ("t5", False)]


def _tiny_hf(family: str, tie: bool):
    extra = {} if family == "electra" else {"tie_embeddings": tie}
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset(family, **TINY, **extra))
    return model.config, to_transformers(model, family)


@pytest.mark.parametrize("family,tie", TIE_CASES)
def test_tie_flags_match_the_weights(family, tie, tmp_path):
    """tie_word_embeddings in config.json is true iff every tied pair transformers' class declares is one tensor in
    model.safetensors (absent there, or equal): what 4.x ties and rescales by, and 5.x's scale_decoder_outputs."""
    from pretrain.export.compat import save_model

    cfg, hf = _tiny_hf(family, tie)
    save_model(hf, tmp_path, family, cfg)
    config = json.loads((tmp_path / "config.json").read_text())
    weights = load_file(str(tmp_path / "model.safetensors"))
    pairs = dict(type(hf)._tied_weights_keys or {})  # transformers' own: tied target -> source
    tied_in_file = {t: t not in weights or torch.equal(weights[t], weights[s]) for t, s in pairs.items()}
    assert "tie_word_embeddings" in config  # 4.x's default differs per class (Llama: False): always say it
    if config["tie_word_embeddings"]:
        assert all(tied_in_file.values()), tied_in_file
    else:
        assert not all(tied_in_file.values()), "config says untied but the head is the embedding"
    if "scale_decoder_outputs" in config:  # T5: transformers 4.x scales the decoder output iff tied
        assert config["scale_decoder_outputs"] == config["tie_word_embeddings"]
    has_head = family != "electra"
    assert config["tie_word_embeddings"] == (tie if has_head else config["tie_word_embeddings"])
    if family == "llama":
        assert config["rope_theta"] == cfg.rope_theta  # what 4.x reads (5.x: rope_parameters)


# ---- the tokenizer ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bpe():
    from pretrain.data.tokenizer import train_tokenizer

    texts = ["the cat sees the red ball every morning.", "a dog likes the river after lunch."] * 20
    return train_tokenizer("bpe", 300, texts, roles=("bos_token", "mask_token"), progress=False)


def _reference(tokenizer, add_bos: bool, add_eos: bool):
    """transformers' own rule for a family tokenizer (add_bos_token / add_eos_token, as GPT2TokenizerFast and
    LlamaTokenizerFast set them) on our vocabulary."""
    import copy

    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=copy.deepcopy(tokenizer.backend_tokenizer),
                                   bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token,
                                   add_bos_token=add_bos, add_eos_token=add_eos)


@pytest.mark.parametrize("family,add_bos,add_eos", [("gpt2", False, False), ("llama", True, False)])
def test_decoder_prompt_encoded_as_the_family_does(family, add_bos, add_eos, bpe, tmp_path):
    from transformers import AutoTokenizer

    from pretrain.export.compat import family_tokenizer, save_tokenizer

    save_tokenizer(family_tokenizer(bpe, family, token_types=False), tmp_path)
    exported = AutoTokenizer.from_pretrained(tmp_path)
    reference = _reference(bpe, add_bos, add_eos)
    for text, pair in (("the cat sees", None), ("a dog likes", "the river")):
        ids = exported(text, pair)["input_ids"]
        assert ids == reference(text, pair)["input_ids"]
        assert bpe.eos_token_id not in ids  # a prompt is continued, not closed
    assert exported("the cat")["input_ids"][0] == (bpe.bos_token_id if add_bos else bpe("the")["input_ids"][1])
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # 4.x has no TokenizersBackend
    assert config["model_input_names"] == ["input_ids", "attention_mask"]  # 4.x's generate refuses token types
    assert "token_type_ids" not in exported("the cat")


def test_encoder_decoder_templates_unchanged(bpe, tmp_path):
    """BART keeps <s> A </s> (what infilling trains on), T5 A </s>: the family's template equals the run's."""
    from transformers import AutoTokenizer

    from pretrain.export.compat import family_tokenizer, save_tokenizer

    save_tokenizer(family_tokenizer(bpe, "bart", token_types=False), tmp_path / "bart")
    bart = AutoTokenizer.from_pretrained(tmp_path / "bart")
    assert bart("the cat sees")["input_ids"] == bpe("the cat sees")["input_ids"]
    save_tokenizer(family_tokenizer(bpe, "t5", token_types=False), tmp_path / "t5")
    t5 = AutoTokenizer.from_pretrained(tmp_path / "t5")
    assert t5("the cat")["input_ids"] == bpe("the cat", add_special_tokens=False)["input_ids"] + [bpe.eos_token_id]
