"""The numbers the comparison's downstream section prints, pinned on cases where a wrong formula gives another
value: medians (three seeds with a skewed one, where a mean differs), min-max spreads across pretraining seeds
(each seed's value the median over its fine-tuning seeds), the "more than twice the larger range" rule, the
ranking and its "not separable at this budget", the reading each shape is judged by, the bag-of-words line, and
markdown lists and tables that stay lists and tables in the HTML. No model is trained: results.json files are
written by hand."""
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from pretrain import document
from pretrain.compare.config import DownstreamSection
from pretrain.compare.downstream import downstream_facts, downstream_markdown, headline
from pretrain.evaluate.tasks import Task


def _cell(per_seed: list[float]) -> dict:
    return {"per_seed": [{"seed": i, "test": {"accuracy": a}, "validation": {"accuracy": a}}
                         for i, a in enumerate(per_seed)]}


def results_json(model_type: str, cells: dict, test_examples: int = 10**9) -> dict:
    """A results.json as evaluate() writes it: cells maps mode -> init -> per-seed test accuracies. The test split
    is huge by default, so that its sampling error is negligible and the seeds' ranges decide."""
    return {"task": {"name": "t", "description": "a task", "labels": [0, 1],
                     "sizes": {"train": 8, "validation": 4, "test": test_examples}, "notes": []},
            "model": {"model_type": model_type, "arch": "x"}, "seeds": [0, 1, 2], "majority": {"test": 0.5},
            "recipes": {"finetune": {"epochs": 1, "lr": 1e-3, "batch_size": 4, "warmup_ratio": 0.1,
                                     "weight_decay": 0.0, "max_length": 8}, "probe": {}},
            **{mode: {init: _cell(v) for init, v in inits.items()} for mode, inits in cells.items()}}


class FakeRunDir:
    FINETUNE_RESULTS = "results.json"

    def __init__(self, path: Path):
        self.finetune = path / "finetune"


def facts_for(tmp_path: Path, runs: dict[str, list[dict]], bag_of_words: bool = False, task=None) -> dict:
    trained = []
    for name, per_seed in runs.items():
        for k, results in enumerate(per_seed):
            folder = tmp_path / f"{name}-{k}"
            (folder / "finetune" / "t").mkdir(parents=True)
            (folder / "finetune" / "t" / "results.json").write_text(json.dumps(results))
            trained.append(SimpleNamespace(name=name, run_dir=FakeRunDir(folder), seed_index=k))
    cfg = SimpleNamespace(downstream=DownstreamSection(bag_of_words=bag_of_words))
    return downstream_facts(cfg, task or SimpleNamespace(name="t"), trained, tmp_path / "out")


BASE = {"probe": {"pretrained": [0.6], "random_init": [0.5, 0.5, 0.5]},
        "finetune": {"pretrained": [0.6, 0.6, 0.6], "random_init": [0.5, 0.5, 0.5]}}


def test_median_of_three_fine_tuning_seeds_with_a_skewed_one(tmp_path):
    """Fine-tuning seeds 0.60, 0.62, 0.95: median 0.62 (a mean would say 0.69), range 0.35."""
    facts = facts_for(tmp_path, {"a": [results_json("bert", {**BASE, "finetune": {
        "pretrained": [0.60, 0.95, 0.62], "random_init": [0.40, 0.41, 0.70]}})]})
    cell = facts["rows"][0]["cells"]["finetune/pretrained"]
    assert cell["median"] == pytest.approx(0.62) and cell["min"] == 0.60 and cell["max"] == 0.95
    assert cell["range"] == pytest.approx(0.35) and cell["n"] == 3 and cell["over"] == "fine-tuning seeds"
    assert facts["rows"][0]["cells"]["finetune/random_init"]["median"] == pytest.approx(0.41)


def test_spread_across_pretraining_seeds(tmp_path):
    """Two pretraining seeds, three fine-tuning seeds each: the cell is over the two per-seed medians (0.62 and
    0.80 -> median 0.71, range 0.18), not over the six pooled values (median 0.71 too, but range 0.40); the
    random-init cell stays over its init seeds."""
    seed0 = results_json("bert", {**BASE, "finetune": {"pretrained": [0.60, 0.62, 0.95],
                                                       "random_init": [0.40, 0.41, 0.70]}})
    seed1 = results_json("bert", {**BASE, "finetune": {"pretrained": [0.55, 0.80, 0.81],
                                                       "random_init": [0.40, 0.41, 0.70]}})
    facts = facts_for(tmp_path, {"a": [seed0, seed1]})
    row = facts["rows"][0]
    cell = row["cells"]["finetune/pretrained"]
    assert (cell["n"], cell["over"]) == (2, "pretraining seeds")
    assert cell["median"] == pytest.approx(0.71) and cell["range"] == pytest.approx(0.18)
    assert row["cells"]["finetune/random_init"]["n"] == 3
    assert row["pretraining_seeds"] == 2
    md = downstream_markdown(facts, lambda alt, path: "")
    assert "2 pretraining seeds (spread across them), each the median of 3 fine-tuning seeds" in md


@pytest.mark.parametrize("ours, base, beats", [
    # medians 0.70 vs 0.50 (gap 0.20); ranges 0.09 and 0.02: 0.20 > 2 x 0.09 -> beats
    ([0.65, 0.70, 0.74], [0.49, 0.50, 0.51], True),
    # ranges 0.11 and 0.02: 0.20 < 2 x 0.11 -> within the noise (a rule on the smaller range, or 1x, would say beats)
    ([0.62, 0.70, 0.73], [0.49, 0.50, 0.51], False),
    # base range 0.12 is the larger: 0.20 < 0.24 -> within the noise (a rule on our range alone would say beats)
    ([0.69, 0.70, 0.71], [0.44, 0.50, 0.56], False),
])
def test_beats_random_init_rule(tmp_path, ours, base, beats):
    facts = facts_for(tmp_path, {"a": [results_json("bert", {**BASE, "finetune": {"pretrained": ours,
                                                                                   "random_init": base}})]})
    assert (facts["beats_baseline"]["finetune"] == ["a"]) is beats
    verdict = next(v for v in facts["verdicts"] if "fine-tuned" in v)
    assert ("beats" in verdict) is beats and "+20.0 points" in verdict


def test_ranking_names_only_separable_pairs(tmp_path):
    """a 0.80 [0.79-0.81], b 0.70 [0.69-0.71], c 0.69 [0.60-0.75]: a above b (0.10 > 2 x 0.02); a vs c (0.11 <
    2 x 0.15) and b vs c not separable."""
    def run(values):
        return [results_json("bert", {**BASE, "finetune": {"pretrained": values, "random_init": [0.5] * 3}})]
    facts = facts_for(tmp_path, {"a": run([0.79, 0.80, 0.81]), "b": run([0.69, 0.70, 0.71]),
                                 "c": run([0.60, 0.69, 0.75])})
    rank = facts["ranking"]["finetune"]
    assert rank["order"] == ["a", "b", "c"]
    assert [(p["above"], p["below"]) for p in rank["separated"]] == [("a", "b")]
    assert len(rank["not_separated"]) == 2
    text = headline(facts)
    assert "**Ranking, fine-tuned**: a above b (+10.0 points, noise 2.0). Every other pair: not separable" in text
    same = facts_for(tmp_path / "same", {"a": run([0.6, 0.7, 0.8]), "b": run([0.6, 0.71, 0.8])})
    assert "**Ranking, fine-tuned**: not separable at this budget" in headline(same)


def test_single_fits_judged_by_the_sampling_error(tmp_path):
    """A probe of one pretraining seed is one fit: no range. On 904 test examples, 0.296 against 0.292 (+0.4
    points) is within twice the sampling error sqrt(.296 x .704 / 904 + .292 x .708 / 904) = 2.14 points, and
    0.247 against a random init of 0.209 [0.207-0.217] (+3.8 points; range 1.0) within twice sqrt(.247 x .753 / 904
    + .209 x .791 / 904) = 1.97 points; +10 points is beyond both. A rule on the ranges alone calls every gap real."""
    def run(probe, base, n=904):
        return [results_json("gpt2", {**BASE, "probe": {"pretrained": [probe], "random_init": base}}, n)]
    facts = facts_for(tmp_path, {"a": run(0.296, [0.5] * 3), "b": run(0.292, [0.5] * 3),
                                 "c": run(0.196, [0.5] * 3)})
    rank = facts["ranking"]["probe"]
    assert [(p["above"], p["below"]) for p in rank["separated"]] == [("a", "c"), ("b", "c")]
    assert rank["not_separated"][0]["noise"] == pytest.approx(0.02140, abs=1e-4)
    near = facts_for(tmp_path / "near", {"a": run(0.247, [0.207, 0.209, 0.217])})
    assert near["beats_baseline"]["probe"] == []
    verdict = next(v for v in near["verdicts"] if "probed" in v)
    assert "is within the noise of" in verdict and "+3.8 points" in verdict and "(2.0 points)" in verdict
    large = facts_for(tmp_path / "large", {"a": run(0.247, [0.207, 0.209, 0.217], n=10**6)})
    assert large["beats_baseline"]["probe"] == ["a"]  # the same gap on a million examples: only the range is left


def test_t5_judged_by_its_encoder_bart_by_its_decoder(tmp_path):
    """An encoder-decoder with both readings gets two rows; the headline (beats-baseline, ranking) uses the encoder
    for T5 (its decoder never read the text) and transformers' classifier for BART."""
    def both(model_type, native, encoder):
        cells = {**BASE, "finetune": {"pretrained": native, "random_init": [0.5] * 3},
                 "probe_encoder": BASE["probe"],
                 "finetune_encoder": {"pretrained": encoder, "random_init": [0.5] * 3}}
        return [results_json(model_type, cells)]
    facts = facts_for(tmp_path, {"t5+span": both("t5", [0.5, 0.5, 0.5], [0.9, 0.9, 0.9]),
                                 "bart+infill": both("bart", [0.8, 0.8, 0.8], [0.5, 0.5, 0.5])})
    rows = {(r["name"], r["pooling"]): r for r in facts["rows"]}
    assert rows[("t5+span", "encoder")]["headline"] and not rows[("t5+span", "native")]["headline"]
    assert rows[("bart+infill", "native")]["headline"] and not rows[("bart+infill", "encoder")]["headline"]
    assert rows[("t5+span", "encoder")]["label"] == "t5+span (encoder-pooled)"
    assert facts["beats_baseline"]["finetune"] == ["t5+span (encoder-pooled)", "bart+infill (decoder-pooled)"]
    assert facts["ranking"]["finetune"]["order"] == ["t5+span (encoder-pooled)", "bart+infill (decoder-pooled)"]
    text = headline(facts)
    assert "t5+span by the encoder's mean-pooled states" in text and "bart+infill by transformers' decoder" in text


def test_bag_of_words_line(tmp_path):
    """The label is whether the text holds 'zebra': the bag of words is exactly right on test (a model on the
    lengths or the first word would not be), and it shows as a reference row, in the headline and the plot."""
    def split(n, offset):
        texts = [f"word{(i + offset) % 7} {'zebra' if i % 2 else 'horse'} word{(i * 3) % 5}" for i in range(n)]
        return {"text": texts, "text_pair": None, "label": [i % 2 for i in range(n)]}
    task = Task("t", "a task", [0, 1], {"train": split(40, 0), "validation": split(10, 1), "test": split(12, 2)})
    facts = facts_for(tmp_path, {"a": [results_json("bert", BASE)]}, bag_of_words=True, task=task)
    assert facts["bag_of_words"]["accuracy"] == 1.0 and facts["bag_of_words"]["vocabulary"] == 2 + 7 + 5 - 5
    assert "**Bag-of-words reference:** 100.0%; no run's median reaches it." in headline(facts)
    md = downstream_markdown(facts, lambda alt, path: "")
    assert "| bag of words (reference, no pretraining) | 100.0% |" in md


def test_every_markdown_list_and_table_renders_as_one_in_html():
    """Python-Markdown reads a list directly under a line of text as part of the paragraph: join() sets every
    list and table apart, so the HTML has as many <ul> and <table> as the markdown has lists and tables."""
    text = document.join("Intro line:\n- one\n- two\nmore text\n| a | b |\n|---|---|\n| 1 | 2 |",
                         "Caveats:\n- x\n  continued\n- y", "```\ncode:\n- not a list\n```")
    html = document.to_html(text, "t", Path("."))
    assert html.count("<ul>") == 2 and html.count("<table>") == 1 and html.count("<li>") == 4
    assert "- not a list" in html


def test_report_html_lists_match_markdown(tmp_path):
    """The comparison report's own blocks (its "What is comparable" bullets under a line of text included)."""
    from pretrain.compare.report import COMPARABLE

    md = document.join("# R", COMPARABLE, document.bullets(["*a*: x", "*b*: y"]), "Caveats:",
                       "- one\n- two", document.table(["h"], [["c"]]))
    lists = len(re.findall(r"(?:^|\n\n)- ", md))
    html = document.to_html(md, "t", tmp_path)
    assert html.count("<ul>") == lists == 3 and html.count("<table>") == 1


def test_spread_in_results_json_is_a_median_of_three_seeds():
    """pretrain finetune's results.json (and the model card it feeds): median, min, max of 0.60, 0.62, 0.95."""
    from pretrain.evaluate.scores import spread

    s = spread([{"accuracy": 0.60}, {"accuracy": 0.95}, {"accuracy": 0.62}])["accuracy"]
    assert s == {"median": 0.62, "min": 0.60, "max": 0.95}


def test_cloze_accuracy_top5_nll_and_standard_error():
    """Ten hidden tokens; the model's logits rank the answer first for 3, second for 2 more, last for the rest:
    accuracy 0.3, standard error sqrt(0.3 x 0.7 / 10) = 0.1449 (not over n - 1, not of top-5), top-5 0.5, NLL the
    mean -log softmax of the answer."""
    import math

    import torch

    from pretrain.compare.yardstick import cloze

    vocab, n = 8, 10
    windows = torch.arange(n * 4).remainder(vocab).view(n, 4)
    positions = torch.full((n,), 2)
    targets = windows[:, 2]
    rank = [0, 0, 0, 1, 1, 7, 7, 7, 7, 7]  # where each answer ranks
    scores = torch.tensor([float(vocab - r) for r in range(vocab)])  # descending: rank r gets vocab - r

    asked = []  # the windows come in order, in batches

    def logits_for(model, rows, where, variant):
        out = torch.zeros(len(rows), vocab)
        for i, row in enumerate(rows):
            k = len(asked)
            asked.append(row)
            others = [v for v in range(vocab) if v != int(targets[k])]
            order = others[:rank[k]] + [int(targets[k])] + others[rank[k]:]
            out[i, order] = scores
        return out

    objective = SimpleNamespace(module=None, cloze_logits=logits_for, cloze_method="fake")
    model = torch.nn.Linear(1, 1)
    result = cloze(model, objective, windows, positions, batch_size=4, variants=("both",))["both"]
    logp = torch.log_softmax(scores, 0)
    assert result["accuracy"] == pytest.approx(0.3) and result["top5"] == pytest.approx(0.5)
    assert result["stderr"] == pytest.approx(math.sqrt(0.3 * 0.7 / 10))
    assert result["nll"] == pytest.approx(float(-sum(logp[r] for r in rank) / n), rel=1e-6)


def test_validation_loss_panels_each_on_its_own_scale():
    """One panel per run: ELECTRA's loss (about 26) does not stretch BERT's axis (about 6), and two seeds of a run
    share its panel."""
    import matplotlib.pyplot as plt

    from pretrain.compare.report import val_loss_figure

    def run(name, level, seed=0):
        return {"name": name, "parameters": 1e6, "seed_index": seed,
                "val_curve": [{"tokens": t * 1000, "loss": level + 1 / t + 0.01 * seed} for t in range(1, 5)]}
    fig = val_loss_figure([run("bert+mlm", 6), run("bert+mlm", 6, 1), run("electra+rtd", 26), run("t5+span", 4)],
                          "tokens")
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title().split(" ")[0] for ax in panels] == ["bert+mlm", "electra+rtd", "t5+span"]
    assert panels[0].get_ylim()[1] < 8 and panels[1].get_ylim()[0] > 24 and panels[2].get_ylim()[1] < 6
    assert "mean of 2 seeds" in panels[0].get_title()
    plt.close(fig)
