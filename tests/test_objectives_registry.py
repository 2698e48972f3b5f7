"""The registry, architecture checks, option errors, and determinism: same generator state -> same batch."""
import pytest
import torch
from objectives_fixtures import bpe, random_blocks, unigram, wordpiece

from objectives import OBJECTIVES, build_objective, register
from objectives.base import Objective
from pretrain.errors import UserError

# name -> (tokenizer, compatible archs)
CASES = {"mlm": (wordpiece, ("encoder",)), "clm": (bpe, ("decoder", "encoder-decoder")),
         "span": (unigram, ("encoder-decoder",)), "infill": (bpe, ("encoder-decoder",))}


def test_registry_has_the_four_objectives():
    assert set(OBJECTIVES) >= {"mlm", "clm", "span", "infill"}
    for name, (_, archs) in CASES.items():
        assert OBJECTIVES[name].name == name and OBJECTIVES[name].archs == archs
    assert "sentinels" in OBJECTIVES["span"].special_tokens          # class attributes: known before a tokenizer
    assert {"mask_token", "bos_token"} <= set(OBJECTIVES["infill"].special_tokens)
    assert "mask_token" in OBJECTIVES["mlm"].special_tokens


def test_unknown_name_and_option_are_one_line_user_errors():
    with pytest.raises(UserError, match="unknown objective 'bert'.*clm, infill, mlm, span") as err:
        build_objective("bert", wordpiece())
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no option 'mask_prob'.*mlm_probability"):
        build_objective("mlm", wordpiece(), mask_prob=0.2)
    with pytest.raises(UserError, match="mlm_probability=1.5"):
        build_objective("mlm", wordpiece(), mlm_probability=1.5)
    with pytest.raises(UserError, match="mask_token"):
        build_objective("mlm", unigram())                                # T5 tokenizer has no mask token


@pytest.mark.parametrize("name", CASES)
def test_check_arch(name):
    make_tok, archs = CASES[name]
    obj = build_objective(name, make_tok())
    for arch in ("encoder", "decoder", "encoder-decoder"):
        if arch in archs:
            obj.check_arch(arch)
            continue
        with pytest.raises(ValueError) as err:
            obj.check_arch(arch)
        message = str(err.value)
        article = "an" if arch[0] == "e" else "a"
        assert "\n" not in message and f"'{name}' cannot train {article} {arch} model" in message
        assert all(a in message for a in archs)                         # names what it can train
    with pytest.raises(ValueError, match="unknown architecture"):
        obj.check_arch("rnn")


def test_check_arch_messages_point_to_presets():
    with pytest.raises(ValueError, match="needs an encoder \\(preset bert\\); use clm for gpt2/llama"):
        build_objective("mlm", wordpiece()).check_arch("decoder")
    with pytest.raises(ValueError, match="t5.*use clm for gpt2/llama"):
        build_objective("span", unigram()).check_arch("decoder")


@pytest.mark.parametrize("name", CASES)
def test_same_generator_state_same_batch(name):
    make_tok, archs = CASES[name]
    tok = make_tok()
    obj = build_objective(name, tok, **({"whole_word": True} if name == "mlm" else {}))
    obj.check_arch(archs[-1])
    blocks = random_blocks(tok, 4, obj.block_length(48), seed=7)
    first = obj.collate(blocks, torch.Generator().manual_seed(123))
    again = obj.collate(blocks.tolist(), torch.Generator().manual_seed(123))   # lists and tensors alike
    other = obj.collate(blocks, torch.Generator().manual_seed(124))
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    assert all(v.dtype == torch.long and v.device.type == "cpu" for v in first.values())
    assert obj.n_tokens(first) == 4 * obj.block_length(48)
    # the generator is the only source of randomness: the global RNG is untouched
    state = torch.get_rng_state()
    obj.collate(blocks, torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.get_rng_state())


def test_a_new_objective_is_one_registered_class():
    @register
    class Copy(Objective):
        name = "copy-test"
        archs = ("encoder",)

        def collate(self, blocks, generator):
            return {"input_ids": torch.as_tensor(blocks), "labels": torch.as_tensor(blocks)}

    try:
        obj = build_objective("copy-test", wordpiece())
        assert obj.collate([[5, 6]], torch.Generator())["labels"].tolist() == [[5, 6]]
    finally:
        del OBJECTIVES["copy-test"]
