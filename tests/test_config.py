"""The config tree: YAML + dotted overrides, precedence, refusals in one line, the resolved model config."""
import pytest

from pretrain.train.config import (ConfigError, TrainConfig, config_hash, parse_config, resolve_model_config,
                             to_yaml)

RECIPE = {"model": {"preset": "gpt2", "d_model": 64, "n_layers": 1, "n_heads": 2, "d_ff": 128, "max_seq_len": 64},
          "objective": {"name": "clm"}, "run": {"seq_len": 32, "max_steps": 10}}


def test_defaults_overrides_and_yaml(tmp_path):
    yaml_file = tmp_path / "my.yaml"
    yaml_file.write_text("model:\n  d_model: 96\n  n_heads: 4\noptim:\n  lr: 0.002\nrun:\n  batch_size: 3\n")
    cfg = parse_config(["--config", str(yaml_file), "--run.batch_size", "5", "--optim.betas", "[0.9, 0.95]"], RECIPE)
    assert isinstance(cfg, TrainConfig)
    assert cfg.model.preset == "gpt2" and cfg.model.d_model == 96 and cfg.model.n_layers == 1  # recipe < yaml
    assert cfg.optim.lr == 0.002 and cfg.run.batch_size == 5  # flags beat the YAML
    assert tuple(cfg.optim.betas) == (0.9, 0.95)
    assert cfg.model.dropout is None  # None = the preset's value
    model_cfg = resolve_model_config(cfg, vocab_size=500, token_ids={"pad": 0, "eos": 1, "bos": 2})
    assert (model_cfg.arch, model_cfg.d_model, model_cfg.vocab_size, model_cfg.activation) == \
        ("decoder", 96, 500, "gelu_tanh")
    assert (model_cfg.pad_token_id, model_cfg.eos_token_id) == (0, 1)


def test_flags_resume_overwrite():
    cfg = parse_config(["--resume", "--overwrite"], RECIPE)
    assert cfg.run.resume == "auto" and cfg.run.overwrite


def test_decoder_start_follows_the_preset_role():
    ids = {"pad": 0, "eos": 1, "bos": 2}
    bart = parse_config(["--model.preset", "bart", "--objective.name", "infill", "--model.max_seq_len", "64"], RECIPE)
    t5 = parse_config(["--model.preset", "t5", "--objective.name", "span", "--model.max_seq_len", "64"], RECIPE)
    assert resolve_model_config(bart, 100, ids).decoder_start_token_id == 1  # BART starts with </s>
    assert resolve_model_config(t5, 100, ids).decoder_start_token_id == 0  # T5 starts with <pad>


@pytest.mark.parametrize("argv, words", [
    (["--model.dmodel", "5"], ["unknown", "dmodel"]),
    (["--model.d_model", "big"], ["model.d_model", "big", "int"]),
    (["--run.mixed_precision", "fp8"], ["run.mixed_precision", "fp8"]),
    (["--nonsense", "1"], ["unknown option", "--nonsense"]),
    (["--objective.name", "mlm"], ["mlm", "encoder", "decoder"]),  # objective vs architecture
    (["--run.seq_len", "128"], ["seq_len 128", "max_seq_len 64"]),
    (["--model.preset", "bort"], ["unknown model.preset", "bert"]),
    (["--objective.name", "nope"], ["unknown objective", "clm"]),
    (["--model.n_heads", "3"], ["divisible"]),
    (["--run.max_steps", "null"], ["no budget"]),
    (["--tokenizer.kind", "bpe", "--tokenizer.vocab_size", "100"], ["tokenizer.vocab_size 100", "at least 261"]),
])
def test_refusals_are_one_line(argv, words):
    with pytest.raises(ConfigError) as info:
        parse_config(argv, RECIPE)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_unknown_key_in_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        parse_config(["--config", str(bad)], RECIPE)


def test_yaml_round_trip_and_hash(tmp_path):
    cfg = parse_config(["--model.d_model", "32", "--objective.options", '{"prefix_lm": false}'], RECIPE)
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg))
    again = parse_config([], None, saved_config=str(saved))
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    resumed = parse_config(["--run.max_steps", "20", "--resume"], None, saved_config=str(saved))
    assert config_hash(resumed) == config_hash(cfg)  # budget and control flags do not change the hash
    other = parse_config(["--optim.lr", "0.1"], None, saved_config=str(saved))
    assert config_hash(other) != config_hash(cfg)


def test_yaml_no_is_a_string_not_false(tmp_path):
    """YAML 1.2 booleans: `mixed_precision: no` means "no" (PyYAML's YAML 1.1 would read False and refuse it)."""
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  mixed_precision: no\n  progress: false\nobjective:\n  document_masking: true\n")
    cfg = parse_config(["--config", str(path)])
    assert cfg.run.mixed_precision == "no" and cfg.run.progress is False and cfg.objective.document_masking is True
