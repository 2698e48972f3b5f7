"""Do our exports load, tokenize and compute the same logits in transformers 4.x as in 5.x and in our model?

Builds a separate virtual environment with the newest transformers 4.x (`pip install torch==2.13.0 "transformers<5"
safetensors`), trains a tiny model of every exportable family (and the objectives whose exports differ: FIM's
sentinels, UL2's paradigm tokens, ELECTRA's generator) for a few steps with our trainer, exports each with our code,
then, in that environment (a subprocess that imports only transformers), loads every folder with `AutoTokenizer` and
the `AutoModelFor...` class and compares: token ids against transformers 5.x, logits against our model (and 5.x's),
greedy generation against 5.x's. Prints one table row per export; exits 1 when any row fails.

    python benchmarks/export_compat.py                          # venv and work files in a temporary directory
    python benchmarks/export_compat.py --venv /work/tf4-venv --work /tmp/compat   # reuse a venv, keep the exports
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TOL = 1e-4
TEXTS = ("the cat sees the red ball every morning.", "a dog likes the river")
NEW_TOKENS = 8
LOADERS = {"encoder": "AutoModelForMaskedLM", "decoder": "AutoModelForCausalLM",
           "encoder-decoder": "AutoModelForSeq2SeqLM"}


# ---- the 4.x side (runs in the other environment: transformers and torch only) -----------------------------------
def load_side(reference_file: str) -> None:
    """Load every export of the reference with this environment's transformers; print one JSON result per case."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    cases = json.loads(Path(reference_file).read_text())
    for case in cases:
        result = {"case": case["case"], "version": transformers.__version__}
        try:
            folder = case["folder"]
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
            result["tokenizer_class"] = type(tokenizer).__name__
            ids = [tokenizer(text)["input_ids"] for text in case["texts"]]
            result["ids_equal"] = ids == case["ids"]
            model = getattr(transformers, case["loader"]).from_pretrained(folder).eval()
            result["model_class"] = type(model).__name__
            batch = {k: torch.tensor(v) for k, v in case["inputs"].items()}
            with torch.no_grad():
                logits = model(**batch).logits
            mask = torch.tensor(case["mask"], dtype=torch.bool)
            result["diff_5x"] = (logits - torch.tensor(case["logits_5x"]))[mask].abs().max().item()
            if case["logits_ours"] is not None:
                result["diff_ours"] = (logits - torch.tensor(case["logits_ours"]))[mask].abs().max().item()
            if case.get("generated_5x") is not None:
                prompt = tokenizer(case["prompt"], return_tensors="pt")
                with torch.no_grad():
                    out = model.generate(**prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
                result["generate_equal"] = out[0].tolist() == case["generated_5x"]
        except Exception as e:  # a row of the table, not a crash: the point is to see every family
            result["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
        print(json.dumps(result), flush=True)


# ---- the environment --------------------------------------------------------------------------------------------
def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"building {venv} (torch 2.13.0, the newest transformers 4.x) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0", "transformers<5", "safetensors"],
                       check=True)
    return python


# ---- our side (this environment: the toolkit with transformers 5.x) -------------------------------------------
def cases() -> list[tuple[str, str, str]]:
    """(family, tokenizer kind, objective): every exportable family with its default objective, plus the objectives
    whose exports carry tokens of their own."""
    from models.convert import hf_classes
    from models.family import get_family

    kinds = {"bert": "wordpiece", "electra": "wordpiece", "t5": "unigram"}
    rows = [(name, kinds.get(name, "bpe"), get_family(name).default_objective) for name in hf_classes()]
    return rows + [("gpt2", "bpe", "fim"), ("llama", "bpe", "fim"), ("t5", "unigram", "ul2")]


def train(work: Path, family: str, kind: str, objective: str, steps: int) -> Path:
    import contextlib
    import io

    from pretrain.train.main import train_main

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from train_fixtures import write_corpus

    corpus = work / "corpus" / "corpus.txt"
    if not corpus.exists():
        write_corpus(corpus.parent, 200)
    run = work / f"run_{family}_{objective}"
    flags = {"--data.files": json.dumps([str(corpus)]), "--model.preset": family, "--model.d_model": "32",
             "--model.n_layers": "2", "--model.n_heads": "2", "--model.d_ff": "64", "--model.max_seq_len": "64",
             "--model.dropout": "0.0", "--objective.name": objective, "--tokenizer.kind": kind,
             "--tokenizer.vocab_size": "300", "--run.seq_len": "32", "--run.batch_size": "8",
             "--run.max_steps": str(steps), "--run.eval_every": str(steps), "--run.save_every": str(steps),
             "--run.eval_batches": "1", "--run.progress": "false", "--run.sample": "false",
             "--run.mixed_precision": "no", "--optim.warmup_steps": "2", "--optim.lr": "3e-3",
             "--run.output_dir": str(run), "--run.cache_dir": str(work / "cache"), "--run.overwrite": "true"}
    if family == "llama":
        flags["--model.n_kv_heads"] = "1"
    with contextlib.redirect_stdout(io.StringIO()):
        train_main(None, [x for kv in flags.items() for x in kv])
    return run


def prompt_for(objective: str, tokenizer) -> str:
    """A prompt the export answers: a sentence start, or the objective's own frame (FIM sentinels, a T5 sentinel,
    BART's mask)."""
    if objective == "fim":
        return "<fim_prefix>the cat sees<fim_suffix> every morning.<fim_middle>"
    if objective in ("span", "ul2"):
        return ("[NLU] " if objective == "ul2" else "") + "the cat <extra_id_0> the red ball every morning."
    if objective == "infill":
        return f"the cat sees{tokenizer.mask_token} every morning."
    return "the cat sees"


def reference(run: Path, folder: Path, objective: str, ours: bool) -> dict:
    """What 5.x and (when `ours`: the folder is the run's model itself) our model say on the export: token ids,
    logits, greedy generation."""
    import torch
    import transformers

    from pretrain.train.saved_run import load_run_model

    model, cfg, _, _ = load_run_model(run)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    texts = list(TEXTS) + [prompt_for(objective, tokenizer)]
    ids = [tokenizer(text)["input_ids"] for text in texts]
    batch = tokenizer(list(TEXTS), return_tensors="pt", padding=True)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    mask = batch["attention_mask"]
    if cfg.arch == "encoder-decoder":
        dec = tokenizer(["cat sees", "a dog likes the"], return_tensors="pt", padding=True, add_special_tokens=False)
        start = torch.full((2, 1), cfg.decoder_start_token_id)
        inputs["decoder_input_ids"] = torch.cat([start, dec["input_ids"]], 1)
        mask = inputs["decoder_attention_mask"] = torch.cat([torch.ones(2, 1, dtype=torch.long),
                                                             dec["attention_mask"]], 1)
    architecture = json.loads((folder / "config.json").read_text())["architectures"][0]
    loader = LOADERS[cfg.arch] if ours and not cfg.head_outputs else architecture  # ELECTRA: its own class
    hf_model = getattr(transformers, loader).from_pretrained(folder).eval()
    with torch.no_grad():
        theirs = hf_model(**inputs).logits
        mine = model.logits(model(**inputs)).reshape(theirs.shape) if ours else None
    generated = None
    if cfg.arch != "encoder":
        prompt = tokenizer(texts[-1], return_tensors="pt")
        with torch.no_grad():
            generated = hf_model.generate(**prompt, max_new_tokens=NEW_TOKENS, do_sample=False)[0].tolist()
    return {"folder": str(folder), "loader": loader, "texts": texts, "ids": ids, "prompt": texts[-1],
            "inputs": {k: v.tolist() for k, v in inputs.items()}, "mask": mask.bool().tolist(),
            "logits_ours": None if mine is None else mine.tolist(), "logits_5x": theirs.tolist(),
            "diff_5x_ours": None if mine is None else (theirs - mine)[mask.bool()].abs().max().item(),
            "generated_5x": generated, "continued": None if generated is None else tokenizer.decode(generated)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", help="the transformers 4.x environment (built when missing; default: temporary)")
    parser.add_argument("--work", help="where runs and exports go (default: temporary)")
    parser.add_argument("--steps", type=int, default=20, help="training steps of each tiny model")
    parser.add_argument("--load-side", help=argparse.SUPPRESS)  # internal: run inside the 4.x environment
    args = parser.parse_args(argv)
    if args.load_side:
        load_side(args.load_side)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    import transformers

    from pretrain.export.to_hf import export_run

    transformers.logging.set_verbosity_error()
    scratch = tempfile.TemporaryDirectory(prefix="export-compat-")
    work = Path(args.work or scratch.name)
    python = ensure_venv(Path(args.venv or Path(scratch.name) / "venv"))
    refs = []
    for family, kind, objective in cases():
        run = train(work, family, kind, objective, args.steps)
        folder = export_run(run, work / f"export_{family}_{objective}", overwrite=True, log=lambda m: None)
        refs.append({"case": f"{family}+{objective}", **reference(run, folder, objective, ours=True)})
        for extra in sorted(p for p in folder.iterdir() if (p / "config.json").is_file()):  # ELECTRA's generator/
            refs.append({"case": f"{family}+{objective}/{extra.name}", **reference(run, extra, objective, ours=False)})
    ref_file = work / "reference.json"
    ref_file.write_text(json.dumps(refs))
    proc = subprocess.run([str(python), __file__, "--load-side", str(ref_file)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ""})
    results = {r["case"]: r for r in map(json.loads, filter(None, proc.stdout.splitlines()))}
    if proc.returncode or len(results) != len(refs):
        print(proc.stderr[-2000:], file=sys.stderr)
    return print_table(refs, results)


def _num(value) -> str:
    return "-" if value is None else f"{value:.1e}"


def print_table(refs: list[dict], results: dict) -> int:
    v5 = __import__("transformers").__version__
    v4 = next((r["version"] for r in results.values()), "?")
    print(f"\ntransformers {v4} (4.x) vs {v5} (5.x, the toolkit's) and our model; logits fp32, tolerance {TOL}")
    header = ("export", "4.x tokenizer", "ids 4.x=5.x", "4.x class", "|4.x-ours|", "|5.x-ours|", "|4.x-5.x|",
              "generate 4.x=5.x", "ok")
    rows, failed = [], 0
    for ref in refs:
        r = results.get(ref["case"], {"error": "no result"})
        ours = [d for d in (r.get("diff_ours"), ref["diff_5x_ours"]) if d is not None]
        ok = "error" not in r and r["ids_equal"] and r["diff_5x"] <= TOL and all(d <= TOL for d in ours) and \
            r.get("generate_equal", True)
        failed += not ok
        rows.append((ref["case"], r.get("tokenizer_class", "-"), str(r.get("ids_equal", "-")),
                     r.get("error", r.get("model_class", "-")), _num(r.get("diff_ours")), _num(ref["diff_5x_ours"]),
                     _num(r.get("diff_5x")), str(r.get("generate_equal", "n/a")), "yes" if ok else "NO"))
    widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(" | ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    print("\ngreedy continuation of each generative export's prompt (5.x):")
    for ref in refs:
        if ref["continued"] is not None:
            print(f"  {ref['case']}: {ref['prompt']!r} -> {ref['continued']!r}")
    print(f"\n{len(rows) - failed} of {len(rows)} exports load alike in transformers {v4} and {v5}")
    from pretrain.export.compat import VERIFIED_WITH

    if not failed and (v4, v5) != VERIFIED_WITH:
        print(f"model cards name {' and '.join(VERIFIED_WITH)}: set VERIFIED_WITH in pretrain/export/compat.py to "
              f"{(v4, v5)} to name these")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
