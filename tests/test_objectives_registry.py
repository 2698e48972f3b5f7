"""The registry, architecture checks, option schemas and errors, the decoder start from the model config, and
determinism: same generator state -> same batch."""
from dataclasses import dataclass

import pytest
import torch
from objectives_fixtures import bpe, model_config, random_blocks, unigram, wordpiece

from models.errors import UserError
from objectives import OBJECTIVES, build_objective, register
from objectives.base import Objective, as_blocks, predict

# name -> (tokenizer, compatible archs)
CASES = {"mlm": (wordpiece, ("encoder",)), "clm": (bpe, ("decoder", "encoder-decoder")),
         "span": (unigram, ("encoder-decoder",)), "infill": (bpe, ("encoder-decoder",))}
PRESET = {"encoder": "bert", "decoder": "gpt2", "encoder-decoder": "bart"}


def test_registry_has_the_four_objectives():
    assert set(OBJECTIVES) >= {"mlm", "clm", "span", "infill"}
    for name, (_, archs) in CASES.items():
        cls = OBJECTIVES[name]
        assert cls.name == name and cls.archs == archs
        assert cls.title and cls.hub_tag and cls.loss_meaning       # what model cards and reports read
    assert [n for n in CASES if OBJECTIVES[n].perplexity] == ["clm", "span", "infill"]
    assert "sentinels" in OBJECTIVES["span"].special_tokens          # class attributes: known before a tokenizer
    assert {"mask_token", "bos_token"} <= set(OBJECTIVES["infill"].special_tokens)
    assert "mask_token" in OBJECTIVES["mlm"].special_tokens


def test_unknown_name_and_option_are_one_line_user_errors():
    tok = wordpiece()
    bert = model_config("bert", tok)
    with pytest.raises(UserError,
                       match="unknown objective 'bert'.*clm, electra, fim, hybrid, infill, mlm, span") as err:
        build_objective("bert", tok, bert)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no option 'mask_prob'.*mlm_probability"):
        build_objective("mlm", tok, bert, mask_prob=0.2)
    with pytest.raises(UserError, match="mlm_probability=1.5"):
        build_objective("mlm", tok, bert, mlm_probability=1.5)
    with pytest.raises(UserError, match="mask_token"):
        build_objective("mlm", unigram(), model_config("bert", unigram()))  # T5 tokenizer has no mask token


def test_options_are_checked_without_a_tokenizer():
    """The schema the config check uses before anything is written: names, types, ranges."""
    mlm = OBJECTIVES["mlm"]
    assert mlm.parse_options({}).mlm_probability == 0.15
    options = mlm.parse_options({"mask_replace": 1, "random_replace": 0, "whole_word": True})  # ints for floats
    assert options.mask_replace == 1.0 and isinstance(options.mask_replace, float) and options.whole_word
    for bad, pattern in (({"mask_prob": 0.2}, "no option 'mask_prob'.*mlm_probability"),
                         ({"mlm_probability": "high"}, "mlm_probability='high' must be float"),
                         ({"whole_word": 1}, "whole_word=1 must be bool"),
                         ({"mlm_probability": 0.0}, r"mlm_probability=0.0 must be in \(0, 1\)")):
        with pytest.raises(UserError, match=pattern):
            mlm.parse_options(bad)
    assert OBJECTIVES["clm"].parse_options({"prefix_lm": None}).prefix_lm is None  # Optional[bool]
    with pytest.raises(UserError, match="prefix_lm='yes' must be bool or null"):
        OBJECTIVES["clm"].parse_options({"prefix_lm": "yes"})


@pytest.mark.parametrize("name", CASES)
def test_check_arch(name):
    make_tok, archs = CASES[name]
    cls = OBJECTIVES[name]
    for arch in ("encoder", "decoder", "encoder-decoder"):
        if arch in archs:
            cls.check_arch(arch)
            build_objective(name, make_tok(), model_config(PRESET[arch], make_tok()))
            continue
        with pytest.raises(ValueError) as err:
            cls.check_arch(arch)
        message = str(err.value)
        article = "an" if arch[0] == "e" else "a"
        assert "\n" not in message and f"'{name}' cannot train {article} {arch} model" in message
        assert all(a in message for a in archs)                         # names what it can train
        with pytest.raises(UserError, match=f"cannot train {article} {arch} model"):  # built for it: the same
            build_objective(name, make_tok(), model_config(PRESET[arch], make_tok()))
    with pytest.raises(ValueError, match="unknown architecture"):
        cls.check_arch("rnn")


def test_check_arch_messages_point_to_presets():
    with pytest.raises(ValueError, match="needs an encoder \\(presets bert, modernbert\\); use clm for "
                                         "gpt2/llama/modernbert_decoder"):
        OBJECTIVES["mlm"].check_arch("decoder")
    with pytest.raises(ValueError, match="t5.*use clm for gpt2/llama/modernbert_decoder"):
        OBJECTIVES["span"].check_arch("decoder")
    with pytest.raises(ValueError, match="use infill for bart, span for t5, or clm"):  # from the family files
        OBJECTIVES["mlm"].check_arch("encoder-decoder")


@pytest.mark.parametrize("name,convention", [("clm", "pad_token_id"), ("span", "pad_token_id"),
                                             ("infill", "eos_token_id")])
def test_decoder_start_comes_from_the_model_config(name, convention):
    tok = CASES[name][0]()
    blocks = random_blocks(tok, 3, 40)
    for start, expected in ((7, 7), (None, getattr(tok, convention))):  # the config's id, else the convention
        obj = build_objective(name, tok, model_config("t5", tok, decoder_start_token_id=start))
        batch = obj.collate(blocks, torch.Generator().manual_seed(0))
        assert (batch["decoder_input_ids"][:, 0] == expected).all()     # no placeholder left for loss() to patch


@pytest.mark.parametrize("name", CASES)
def test_same_generator_state_same_batch(name):
    make_tok, archs = CASES[name]
    tok = make_tok()
    obj = build_objective(name, tok, model_config(PRESET[archs[-1]], tok),
                          **({"whole_word": True} if name == "mlm" else {}))
    blocks = random_blocks(tok, 4, obj.block_length(48), seed=7)
    first = obj.collate(blocks, torch.Generator().manual_seed(123))
    again = obj.collate(blocks.tolist(), torch.Generator().manual_seed(123))   # lists and tensors alike
    other = obj.collate(blocks, torch.Generator().manual_seed(124))
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    assert all(v.dtype == torch.long and v.device.type == "cpu" for v in first.values())
    # the generator is the only source of randomness: the global RNG is untouched
    state = torch.get_rng_state()
    obj.collate(blocks, torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.get_rng_state())


def test_a_new_objective_is_one_registered_class():
    @dataclass
    class CopyOptions:
        shift: int = 0

        def check(self):
            if self.shift < 0:
                raise UserError("objective 'copy-test': shift must be >= 0")

    @register
    class Copy(Objective):
        name = "copy-test"
        archs = ("encoder",)
        Options = CopyOptions

        def collate(self, blocks, generator):
            ids = as_blocks(blocks)
            return {"input_ids": ids, "labels": ids.roll(self.options.shift, dims=1)}

        def loss(self, model, batch):
            return predict(model, model(batch["input_ids"]), batch["labels"])

    try:
        obj = build_objective("copy-test", wordpiece(), model_config("bert", wordpiece()), shift=1)
        assert obj.collate([[5, 6]], torch.Generator())["labels"].tolist() == [[6, 5]]
        with pytest.raises(UserError, match="shift must be >= 0"):
            build_objective("copy-test", wordpiece(), model_config("bert", wordpiece()), shift=-1)
    finally:
        del OBJECTIVES["copy-test"]


@pytest.mark.parametrize("name", CASES)
def test_padding_is_never_a_target_nor_attended(name):
    """data.tail pad leaves the corpus's last block ending in padding: every objective keeps it out of the loss
    (no label is the pad token) and out of attention (the encoder's attention_mask is 0 there)."""
    from objectives_fixtures import padded_blocks

    make_tok, archs = CASES[name]
    tok = make_tok()
    for arch in archs:
        obj = build_objective(name, tok, model_config(PRESET[arch], tok))
        blocks = padded_blocks(tok, 3, obj.block_length(40), real=11)
        batch = obj.collate(blocks, torch.Generator().manual_seed(0))
        assert not (batch["labels"] == tok.pad_token_id).any()
        assert ((batch["labels"] != -100).sum(1) > 0).all()  # the padded row still trains on its real tokens
        pads = batch["input_ids"] == tok.pad_token_id
        mask = batch.get("attention_mask")
        if arch == "decoder":  # right padding of a causal model: no real position can see it
            assert mask is None and not pads[:2].any()
        else:
            assert mask is not None and not mask.bool()[pads].any() and mask.bool()[~pads].all()
        if name in ("mlm", "span") or arch == "decoder":  # blocks without padding: no mask, the fast path
            assert "attention_mask" not in obj.collate(blocks[:2], torch.Generator().manual_seed(0))
