"""Worker of tests/test_reproducible.py: in one fresh process, every recipe (and a char-tokenizer run) on a tiny
model for a few fp32 steps, each into OUT/<name> with its own cache, so every tokenizer is trained here."""
import importlib.util
import sys
from pathlib import Path

from pretrain.train.main import train_main

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
RUNS = {"bert_mlm": [], "gpt_clm": [], "t5_span": [], "bart_infill": [], "electra_rtd": [], "gpt_fim": [],
        "ul2": [], "char": ["--tokenizer.kind", "char"]}  # char: the GPT recipe on a character tokenizer


def recipe(name: str) -> dict:
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DEFAULTS


def tiny(corpus: str, out: Path) -> list[str]:
    flags = {"--data.files": corpus, "--tokenizer.vocab_size": "300", "--model.d_model": "16",
             "--model.n_layers": "1", "--model.n_heads": "2", "--model.d_ff": "32", "--model.max_seq_len": "64",
             "--run.seq_len": "32", "--run.batch_size": "4", "--run.max_steps": "2", "--run.eval_every": "2",
             "--run.save_every": "2", "--run.eval_batches": "1", "--run.output_dir": str(out),
             "--run.cache_dir": str(out / "cache"), "--run.progress": "false", "--run.sample": "false",
             "--run.mixed_precision": "no", "--optim.warmup_steps": "1"}
    return [x for kv in flags.items() for x in kv]


def main(corpus: str, out: str):
    for name, extra in RUNS.items():
        train_main(recipe("gpt_clm" if name == "char" else name), tiny(corpus, Path(out) / name) + extra, prog=name)


if __name__ == "__main__":
    main(*sys.argv[1:])
