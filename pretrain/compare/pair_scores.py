"""The comparison's zero-shot section: every trained run (its first seed) and its random-init model (the very
weights it started from: same config, same seed) scored on minimal pairs by pretrain/evaluate/score.py, each as its
objective frames a sentence. Sources: pairs made from the held-out validation text by word perturbations, the
built-in English grammar set, and any pairs files the configuration adds (pairs.files).

    facts = pair_facts(cfg, runs, tokenizer)     # per run and source: accuracy ± SE, random init, per group
    pairs_markdown(facts) -> str                 # the headline, a table per source, a table per group
"""
from __future__ import annotations

import math

from .. import document
from ..data.corpus import load_corpus, quiet_datasets
from ..data.packing import validation_texts
from ..evaluate.grammar import grammar_pairs
from ..evaluate.pairs import load_source
from ..evaluate.perturb import corpus_pairs
from ..evaluate.score import run_scorer, score_pairs
from ..train.build import build_model, run_spec
from ..train.saved_run import load_run_model, load_run_spec

DEFINITION = """\
A **minimal pair** is two sentences that differ in one point, one acceptable and one not; a model gets the pair right
when it gives the acceptable one the strictly higher score (a tie is wrong). Every model scores a sentence the way its
objective frames a hole (the *method* column): decoders by the sum of token log-probabilities, MLM encoders by
pseudo-log-likelihood, encoder-decoders through their sentinel / mask / prefix; ELECTRA through its generator.
**corpus**: held-out validation sentences against a seeded word-level perturbation (adjacent words swapped, a word
replaced by one of similar corpus frequency, a word duplicated, the halves swapped): the same pairs for every model.
**grammar**: the built-in English grammar set (templates written for this project). Each run is shown beside its
random-init model (the same architecture and initial weights before training); ± is the standard error
sqrt(p(1-p)/n), and a difference counts when it exceeds twice the noise sqrt(SE₁² + SE₂²)."""


def pair_sources(cfg) -> dict:
    section = cfg.pairs
    sources = {}
    if section.corpus > 0:
        with quiet_datasets():
            _, val = load_corpus(cfg.data)
            texts = list(validation_texts(val)["text"])
        sources["corpus"] = corpus_pairs(texts, section.corpus, section.seed)
    if section.grammar > 0:
        sources["grammar"] = grammar_pairs(section.grammar)
    for spec in section.files:
        sources.update(load_source(spec))
    return {k: v for k, v in sources.items() if v}


def _beats(a: dict, b: dict) -> bool:
    noise = math.sqrt(a["stderr"] ** 2 + b["stderr"] ** 2)
    return a["accuracy"] - b["accuracy"] > 2 * noise


def pair_facts(cfg, runs, log=print) -> dict | None:
    """Scores of the first seed of every finished run and of its random init, per source; None when switched off."""
    if not cfg.pairs.enabled:
        return None
    sources = pair_sources(cfg)
    if not sources:
        return None
    out = {"sources": {k: len(v) for k, v in sources.items()}, "runs": []}
    for t in runs:
        if t.seed_index or not t.run_dir.finished():
            continue
        log(f"  pairs: {t.name} and its random init ...")
        model, model_cfg, tokenizer, record = load_run_model(t.run_dir.path)
        trained = run_scorer(model, load_run_spec(record, tokenizer, model_cfg).objective, tokenizer,
                             cfg.pairs.variant)
        fresh_spec = run_spec(record.config, tokenizer, model_cfg)  # an objective's own parameters at init too
        fresh = build_model(record.config, model_cfg).eval()
        if fresh_spec.objective.module is not None:
            fresh_spec.objective.module.eval()
        baseline = run_scorer(fresh, fresh_spec.objective, tokenizer, cfg.pairs.variant)
        entry = {"name": t.name, "method": trained.method, "trained": {}, "random_init": {}}
        for name, pairs in sources.items():
            entry["trained"][name] = score_pairs(trained, pairs)
            entry["random_init"][name] = score_pairs(baseline, pairs)
        entry["beats_random_init"] = [s for s in sources if entry["trained"][s]["n"] and
                                      _beats(entry["trained"][s], entry["random_init"][s])]
        out["runs"].append(entry)
    out["headline"] = headline(out["runs"], list(sources))
    return out


def headline(entries: list[dict], sources: list[str]) -> str:
    parts = []
    for s in sources:
        beat = [e["name"] for e in entries if s in e["beats_random_init"]]
        ranked = [f"{a['name']} > {b['name']}" for a in entries for b in entries
                  if a is not b and _beats(a["trained"][s], b["trained"][s])]
        parts.append(f"**{s}**: {', '.join(beat) or 'no run'} beat{'s' if len(beat) == 1 else ''} its random init "
                     f"by more than twice the noise" + (f"; beyond the noise between runs: {', '.join(ranked)}"
                                                        if ranked else "; no run beats another beyond the noise"))
    return "\n".join(f"- {p}" for p in parts)


def _cell(r: dict) -> str:
    return f"{100 * r['accuracy']:.1f} ± {100 * r['stderr']:.1f}" if r["n"] else "–"


def pairs_markdown(facts: dict | None) -> str:
    if not facts or not facts.get("runs"):
        return ""
    entries, sources = facts["runs"], list(facts["sources"])
    blocks = ["## Zero-shot minimal pairs", facts["headline"], DEFINITION]
    headers = ["run", "method"] + [f"{s} {w}" for s in sources for w in ("acc. %", "random init %")]
    rows = [[e["name"], e["method"]] + [c for s in sources for c in (_cell(e["trained"][s]),
                                                                       _cell(e["random_init"][s]))]
            for e in entries]
    blocks.append(document.table(headers, rows))
    for s in sources:
        groups = sorted({g for e in entries for g in e["trained"][s]["groups"]})
        if len(groups) < 2:
            continue
        rows = [[g] + [_cell(e["trained"][s]["groups"].get(g, {"n": 0})) + " (init " +
                       _cell(e["random_init"][s]["groups"].get(g, {"n": 0})) + ")" for e in entries]
                for g in groups]
        blocks += [f"### {s}: per {'perturbation' if s == 'corpus' else 'phenomenon'} (accuracy %, random init)",
                   document.table([s] + [e["name"] for e in entries], rows)]
    return document.join(*blocks)
