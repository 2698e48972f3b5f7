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
    if family != "electra":  # the discriminator has no LM head to tie
        assert config["tie_word_embeddings"] == tie
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


# ---- generation from a prompt on trained tiny models --------------------------------------------------------------
COUNT = "one two three four five six seven eight nine ten eleven twelve."
GENERATIVE = {"gpt2+clm": ("gpt2", "clm", "one two three four", " five six"),
              "llama+clm": ("llama", "clm", "one two three four", " five six"),
              # FIM: 60 steps do not learn the middle yet; the prompt must still be read as a prompt (no EOS added)
              "gpt2+fim": ("gpt2", "fim", "<fim_prefix>one two three<fim_suffix> six seven<fim_middle>", ""),
              "t5+span": ("t5", "span", "one two three <extra_id_0> six seven eight nine ten eleven twelve.",
                          "<extra_id_0>"),  # the sentinel answered (60 steps do not learn the words yet)
              "bart+infill": ("bart", "infill", "one two three<mask> six seven eight nine ten eleven twelve.",
                              "one two three four five")}


@pytest.fixture(scope="module")
def counting(tmp_path_factory):
    root = tmp_path_factory.mktemp("counting")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join([COUNT] * 200) + "\n")
    return root, corpus


@pytest.mark.parametrize("case", list(GENERATIVE))
def test_generation_continues_the_prompt(case, counting, one_thread):
    """A model trained on one repeated sentence, exported, continues a prompt from it greedily: decoders with the
    next words (the prompt not closed by EOS), FIM with the middle, T5 answers the sentinel, BART fills the mask."""
    import transformers

    from pretrain.export.to_hf import export_run
    from train_fixtures import family_run

    family, objective, prompt, expected = GENERATIVE[case]
    root, corpus = counting
    run = family_run(root / case, family, corpus, root / "cache", 60, **{
        "--objective.name": objective, "--run.mixed_precision": "no", "--run.eval_every": "60",
        "--run.save_every": "60", "--tokenizer.vocab_size": "320"})
    out = export_run(run, root / f"{case}-export", log=lambda m: None)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    auto = "AutoModelForSeq2SeqLM" if family in ("t5", "bart") else "AutoModelForCausalLM"
    model = getattr(transformers, auto).from_pretrained(out).eval()
    inputs = tokenizer(prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=10, do_sample=False)[0].tolist()
    if auto == "AutoModelForCausalLM":
        prompt_ids = inputs["input_ids"][0].tolist()
        assert tokenizer.eos_token_id not in prompt_ids
        assert output[:len(prompt_ids)] == prompt_ids and output[len(prompt_ids)] != tokenizer.eos_token_id
        text = tokenizer.decode(output[len(prompt_ids):])
    else:  # the encoder reads the text as training framed it: T5 `A </s>`, BART `<s> A </s>`
        ids = inputs["input_ids"][0].tolist()
        assert ids[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in ids[:-1]
        text = tokenizer.decode(output, skip_special_tokens=family == "bart").replace("<pad>", "").strip()
    assert text.startswith(expected), (case, text)
