"""The quiet start: a run prints, per section, only the values that differ from the defaults it was launched with,
and where the full config is saved; `--print-config` (jsonargparse's --print_config) prints the whole tree."""
import pytest
import yaml

from pretrain.train.config import parse_config
from pretrain.train.config_summary import changed_values, summary_lines

RECIPE = {"model": {"preset": "bert", "d_model": 128},
          "objective": {"name": "mlm", "options": {"mlm_probability": 0.15}},
          "run": {"output_dir": "runs/x", "max_steps": 600}}


def test_only_the_changed_values_per_section():
    base = parse_config([], RECIPE, check=False)
    cfg = parse_config(["--run.max_steps", "900", "--optim.betas", "[0.9, 0.95]", "--objective.options",
                        '{"mlm_probability": 0.3, "whole_word": true}', "--model.d_model", "128"], RECIPE, check=False)
    assert changed_values(cfg, base) == {"objective": {"options.mlm_probability": 0.3, "options.whole_word": True},
                                         "optim": {"betas": [0.9, 0.95]}, "run": {"max_steps": 900}}
    assert summary_lines(cfg, base, "runs/x/config.yaml") == [
        "config: the recipe's defaults, except",
        "  objective: options.mlm_probability 0.3, options.whole_word true",
        "  optim: betas [0.9, 0.95]",
        "  run: max_steps 900",
        "full config: runs/x/config.yaml (--print-config prints it without training)"]


def test_unchanged_config_is_one_line_and_a_removed_option_shows_as_null():
    base = parse_config([], RECIPE, check=False)
    assert summary_lines(base, base, "c.yaml", "the defaults")[0] == "config: the defaults, unchanged"
    cleared = parse_config(["--objective.options", "{}"], RECIPE, check=False)
    assert changed_values(cleared, base) == {"objective": {"options.mlm_probability": None}}


def test_long_values_are_shortened():
    base = parse_config([], RECIPE, check=False)
    cfg = parse_config(["--data.files", '["' + "/very/long/path/" * 10 + 'a.txt"]'], RECIPE, check=False)
    (line,) = [ln for ln in summary_lines(cfg, base, "c.yaml") if ln.startswith("  data:")]
    assert line.endswith("...") and len(line) <= len("  data: files ") + 60


@pytest.mark.parametrize("flag", ["--print-config", "--print_config"])
def test_print_config_prints_the_whole_tree_and_exits(capsys, flag):
    with pytest.raises(SystemExit) as stop:
        parse_config([flag, "--run.max_steps", "7"], RECIPE)
    assert stop.value.code == 0
    tree = yaml.safe_load(capsys.readouterr().out)
    assert tree["run"]["max_steps"] == 7 and tree["model"]["d_model"] == 128 and "optim" in tree
