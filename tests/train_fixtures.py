"""A tiny synthetic English corpus, a labelled task in its words, and tiny model flags for the end-to-end training
tests (written into tmp_path)."""
import contextlib
import csv
import io
import json
import random
from pathlib import Path

SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the teacher", "a small bird", "the farmer", "our team"]
VERBS = ["sees", "likes", "finds", "paints", "follows", "carries", "helps", "watches"]
OBJECTS = ["the red ball", "a green tree", "the river", "an open door", "the quiet house", "a long road",
           "the bright moon", "some fresh bread"]
ENDINGS = ["every morning", "after lunch", "in the garden", "near the school", "before the rain", "at night"]
WORD = "moon"  # the word task's label: does the sentence mention it?
FAMILY_SETUP = {"bert": ("wordpiece", "mlm"), "gpt2": ("bpe", "clm"), "llama": ("bpe", "clm"),
                "bart": ("bpe", "infill"), "t5": ("unigram", "span"), "modernbert": ("bpe", "mlm"),
                "modernbert_decoder": ("bpe", "clm")}  # family -> (tokenizer kind, objective)


def write_corpus(directory: Path, n_paragraphs: int = 300, seed: int = 0) -> Path:
    """Paragraphs of 3-5 templated sentences: learnable structure, so the loss drops within a few dozen steps."""
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(n_paragraphs):
        sentences = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}."
                     .capitalize() for _ in range(rng.randint(3, 5))]
        paragraphs.append(" ".join(sentences))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "corpus.txt"
    path.write_text("\n\n".join(paragraphs) + "\n")
    return path


def train_val_rows(run: Path) -> list[dict]:
    """The train and validation rows of a run's metrics.jsonl (not the packing statistics)."""
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["split"] in ("train", "val")]


def tiny_flags(tmp_path: Path, corpus: Path, steps: int = 30, **extra) -> list[str]:
    flags = {"--data.files": str(corpus), "--tokenizer.vocab_size": "400", "--model.d_model": "32",
             "--model.n_layers": "1", "--model.n_heads": "2", "--model.d_ff": "64", "--model.max_seq_len": "64",
             "--run.seq_len": "32", "--run.batch_size": "8", "--run.max_steps": str(steps),
             "--run.eval_every": "10", "--run.save_every": "10", "--run.eval_batches": "2",
             "--run.output_dir": str(tmp_path / "run"), "--run.cache_dir": str(tmp_path / "cache"),
             "--run.progress": "false", "--optim.warmup_steps": "5", "--optim.lr": "3e-3"}
    flags.update({f"--{k}": str(v) for k, v in extra.items()})
    return [x for kv in flags.items() for x in kv]


def sentence(rng: random.Random, with_word: bool) -> str:
    objects = [o for o in OBJECTS if (WORD in o) == with_word]
    return (f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(objects)} {rng.choice(ENDINGS)}."
            .capitalize())


def write_word_task(path: Path, n: int, seed: int, shuffle_labels: bool = False) -> Path:
    """A labelled csv (text, label): "yes" when the sentence mentions WORD, else "no"; half of each."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2 == 0
        rows.append({"text": sentence(rng, label), "label": "yes" if label else "no"})
    if shuffle_labels:
        labels = [r["label"] for r in rows]
        rng.shuffle(labels)
        for r, label in zip(rows, labels):
            r["label"] = label
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def family_run(run: Path, family: str, corpus: Path, cache: Path, steps: int, **overrides) -> Path:
    """A real, quiet `pretrain train` run of a tiny model of `family` with its tokenizer kind and objective
    (d_model 32, one layer, sequences of 16, checkpoints every 2 steps); overrides: more --flags."""
    from pretrain.train.main import train_main

    kind, objective = FAMILY_SETUP[family]
    flags = {"--data.files": json.dumps([str(corpus)]), "--model.preset": family, "--model.d_model": "32",
             "--model.n_layers": "1", "--model.n_heads": "2", "--model.d_ff": "64", "--model.max_seq_len": "64",
             "--model.dropout": "0.0", "--objective.name": objective, "--tokenizer.kind": kind,
             "--tokenizer.vocab_size": "300", "--run.seq_len": "16", "--run.batch_size": "4",
             "--run.max_steps": str(steps), "--run.eval_every": "2", "--run.save_every": "2",
             "--run.eval_batches": "1", "--run.progress": "false", "--run.sample": "false",
             "--optim.warmup_steps": "0", "--optim.lr": "3e-3", "--run.output_dir": str(run),
             "--run.cache_dir": str(cache), **{k: str(v) for k, v in overrides.items()}}
    with contextlib.redirect_stdout(io.StringIO()):
        train_main(None, [x for kv in flags.items() for x in kv])
    return run
