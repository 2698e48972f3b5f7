"""model.init_from across objectives and shapes: a CLM run continued as an MLM encoder (and back), an
encoder-decoder's encoder, a checkpoint, a run without a final model; what does not correspond is refused in one
line before anything is written."""
import contextlib
import io
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from models import ModelConfig, Transformer
from pretrain.data.tokenizer import load_tokenizer
from pretrain.errors import UserError
from pretrain.train.build import build_model, build_run, make_accelerator
from pretrain.train.config import load_config
from pretrain.train.evaluation import validation_metrics
from pretrain.train.main import train_main
from train_fixtures import family_run, write_corpus


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("init_from")
    corpus = write_corpus(root / "corpus")
    quiet = {"--run.mixed_precision": "no"}
    runs = {"gpt": family_run(root / "gpt", "gpt2", corpus, root / "cache", steps=30, **quiet),
            "bart": family_run(root / "bart", "bart", corpus, root / "cache", steps=2, **quiet)}
    return root, corpus, runs

PLAIN_HEAD = {"model.head_transform": "false", "model.head_bias": "false", "model.type_vocab_size": "0"}


def flags(setup, out: str, preset: str, objective: str, init_from, steps: int = 2, **extra) -> list[str]:
    root, corpus, _ = setup
    values = {"--data.files": str(corpus), "--model.preset": preset, "--objective.name": objective,
              "--model.init_from": str(init_from), "--run.seq_len": "16", "--run.batch_size": "4",
              "--run.max_steps": str(steps), "--run.eval_every": "2", "--run.save_every": "2",
              "--run.eval_batches": "1", "--run.progress": "false", "--run.sample": "false",
              "--run.mixed_precision": "no", "--optim.warmup_steps": "0", "--run.output_dir": str(root / out),
              "--run.cache_dir": str(root / "cache"), **{f"--{k}": str(v) for k, v in extra.items()}}
    return [x for kv in values.items() for x in kv]


def start(argv):
    """The new run at step 0 as `pretrain train` builds it: (run, model, the lines it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cfg = load_config(argv, None, "pretrain train")
        run = build_run(cfg, make_accelerator(cfg, cfg.run.output_dir, None))
        model = build_model(cfg, run.spec.model_cfg, run.init, run.plan)
    return run, model, out.getvalue().splitlines()


def line(lines, prefix):
    return next(x for x in lines if x.startswith(prefix))


def assert_carried(model, run, source_state, renames):
    """Every carried tensor is the source's, bit for bit, under its (renamed) name."""
    target = model.state_dict()
    assert run.plan.names, "nothing carried"
    for name, origin in run.plan.names.items():
        expected = name
        for new, old in renames.items():
            expected = expected.replace(f"{new}.", f"{old}.", 1) if expected.startswith(f"{new}.") else expected
        assert origin == expected, (name, origin)
        assert torch.equal(target[name], source_state[origin]), name
    assert not set(run.plan.names) & set(run.plan.fresh)
    assert set(run.plan.names) | set(run.plan.fresh) == set(target)


def test_clm_run_continued_as_an_mlm_encoder(setup):
    root, _, runs = setup
    run, model, lines = start(flags(setup, "mlm0", "bert", "mlm", runs["gpt"]))
    source = load_file(str(runs["gpt"] / "final" / "model.safetensors"))
    assert_carried(model, run, source, {"encoder": "decoder"})
    assert len(run.plan.names) == len(source)  # every tensor of the decoder has its place in the encoder
    assert sorted(run.plan.fresh) == sorted(["head_bias", "type_emb.weight", "head_dense.weight", "head_dense.bias",
                                             "head_norm.weight", "head_norm.bias"])
    assert line(lines, "init_from: the final model of run")
    assert "its decoder as the encoder" in line(lines, "init_from: 16 tensors carried over")
    assert line(lines, "init_from: initialized fresh (bert init): head_bias, type_emb.weight, head_dense.weight")
    # the source's tokenizer and body (pre-norm, tanh GELU) by default; the head from the bert preset
    assert run.tokenizer.get_vocab() == load_tokenizer(str(runs["gpt"] / "tokenizer")).get_vocab()
    cfg = run.spec.model_cfg
    assert (cfg.arch, cfg.norm_placement, cfg.activation, cfg.head_transform) == ("encoder", "pre", "gelu_tanh", True)

    # the weights compute what they computed: the encoder is the CLM model's decoder with the causal mask lifted
    ids = torch.randint(0, cfg.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
    origin = Transformer(ModelConfig.from_dict(json.loads((runs["gpt"] / "final" / "model_config.json").read_text())))
    origin.load_state_dict(source)
    origin.decoder.causal = False
    with torch.no_grad():
        assert torch.equal(model.eval().encoder(model.tok_emb(ids)), origin.eval()(ids))

    # the weights are used: at step 0 the MLM loss is below a fresh model's of the same config and seed -- with
    # the preset's fresh head transform kept out, so the CLM-trained tied head predicts (a fresh transform first
    # scrambles the hidden states: the default config starts near a fresh model's loss and must train it)
    run, model, _ = start(flags(setup, "mlm-plain-head", "bert", "mlm", runs["gpt"], **PLAIN_HEAD))
    fresh = build_model(run.cfg, run.spec.model_cfg)
    used, unused = (validation_metrics(m, run.spec.objective, run.val_blocks, 8, seed=0)["loss"]
                    for m in (model, fresh))
    print(f"MLM validation loss at step 0: {used:.3f} from the CLM run, {unused:.3f} from a fresh init")
    assert used < unused - 0.5

    result = train_main(None, flags(setup, "mlm", "bert", "mlm", runs["gpt"], steps=4))  # and it trains
    assert result["step"] == 4 and (root / "mlm" / "final" / "model.safetensors").is_file()
    assert torch.isfinite(torch.tensor(result["val"]["loss"]))


def test_encoder_continued_as_a_decoder(setup):
    root, _, runs = setup
    encoder_run = root / "enc"
    with contextlib.redirect_stdout(io.StringIO()):
        train_main(None, flags(setup, "enc", "bert", "mlm", runs["gpt"], steps=2))
    run, model, lines = start(flags(setup, "dec", "gpt2", "clm", encoder_run))
    source = load_file(str(encoder_run / "final" / "model.safetensors"))
    assert_carried(model, run, source, {"decoder": "encoder"})
    assert run.plan.fresh == []
    assert sorted(run.plan.dropped) == sorted(["head_bias", "type_emb.weight", "head_dense.weight",
                                               "head_dense.bias", "head_norm.weight", "head_norm.bias"])
    assert "its encoder as the decoder" in line(lines, "init_from: 16 tensors carried over")
    assert all(name in line(lines, "init_from: dropped from the source:") for name in run.plan.dropped)


def test_encoder_decoder_gives_its_encoder(setup):
    _, _, runs = setup
    run, model, lines = start(flags(setup, "bart-enc", "bert", "mlm", runs["bart"]))
    source = load_file(str(runs["bart"] / "final" / "model.safetensors"))
    assert_carried(model, run, source, {})
    assert {k for k in source if k.startswith("encoder.")} | {"tok_emb.weight", "head_bias"} == set(run.plan.names)
    assert sorted(run.plan.dropped) == sorted(k for k in source if k.startswith("decoder."))
    assert run.plan.fresh and all(k.startswith(("type_emb", "head_dense", "head_norm")) for k in run.plan.fresh)
    assert "decoder.* (" in line(lines, "init_from: dropped from the source:")
    assert run.spec.model_cfg.position_offset == 2  # BART's learned positions, as the encoder was trained


def test_a_checkpoint_or_a_run_without_final_model(setup):
    root, _, runs = setup
    checkpoint = runs["gpt"] / "checkpoints" / "step_28"
    run, model, lines = start(flags(setup, "from-step", "bert", "mlm", checkpoint))
    assert_carried(model, run, load_file(str(checkpoint / "model.safetensors")), {"encoder": "decoder"})
    assert line(lines, "init_from: checkpoint step_28 of run")

    unfinished = root / "gpt-unfinished"
    shutil.copytree(runs["gpt"], unfinished)
    shutil.rmtree(unfinished / "final")
    run, model, lines = start(flags(setup, "from-unfinished", "bert", "mlm", unfinished))
    assert line(lines, "init_from: run ").endswith("has no final model: its latest checkpoint step_30")
    assert_carried(model, run, load_file(str(unfinished / "checkpoints" / "step_30" / "model.safetensors")),
                   {"encoder": "decoder"})


def test_what_does_not_correspond_is_refused_in_one_line(setup, tmp_path):
    root, _, runs = setup
    other_tokenizer = tmp_path / "tokenizer"
    tok = load_tokenizer(str(runs["gpt"] / "tokenizer"))
    tok.add_tokens(["zebra-crossing"])
    tok.save_pretrained(str(other_tokenizer))
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.txt").write_text("no")
    cases = [
        ({"model.d_ff": "128"}, runs["gpt"], r"tensor\(s\) differ in shape .*d_ff 64 -> 128.*ff\.up\.weight"),
        ({"tokenizer.path": str(other_tokenizer)}, runs["gpt"], "vocabulary is not the source's .*zebra-crossing"),
        ({"model.norm_placement": "post"}, runs["gpt"], "norm_placement 'pre' -> 'post'"),
        ({"model.n_layers": "2"}, runs["gpt"], "layer counts differ .*encoder 2 vs the source's decoder 1"),
        ({}, tmp_path / "empty", "holds no weights we know"),
        ({}, tmp_path / "junk", "holds no weights we know"),
        ({}, tmp_path / "missing", "does not exist"),
    ]
    for extra, source, pattern in cases:
        out = root / "refused"
        with pytest.raises(UserError, match=pattern) as err, contextlib.redirect_stdout(io.StringIO()):
            train_main(None, flags(setup, "refused", "bert", "mlm", source, **extra))
        assert "\n" not in str(err.value)
        assert not out.exists(), f"{extra} left {list(out.iterdir())}"
    no_stack = r"the source \(decoder\) has no stack for every part of this encoder-decoder model"
    with pytest.raises(UserError, match=no_stack), contextlib.redirect_stdout(io.StringIO()):
        train_main(None, flags(setup, "refused", "bart", "infill", runs["gpt"]))
    assert not (root / "refused").exists()
