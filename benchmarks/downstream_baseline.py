"""A bag-of-words baseline on the built-in downstream task (stdlib-area), in torch alone: the floor a fine-tuned or
probed pretrained model should clear.

    python benchmarks/downstream_baseline.py [--features binary|tf] [--min-count 2]

Lowercased \\w+ word tokens, a vocabulary of the training split's words seen at least --min-count times, binary (or
term-frequency) features, multinomial logistic regression with an L2 penalty fitted full batch with L-BFGS; the
penalty is chosen on validation accuracy from a small grid, then the model is scored once on test. Prints one
table: examples per split, majority-class accuracy (the training split's most frequent class), and the BoW model's
accuracy and macro-F1.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pretrain.data.builtin_task import BUILTIN_TASK, builtin_task_labels, builtin_task_splits  # noqa: E402

WORD = re.compile(r"\w+")
L2_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # coefficient of ||W||^2 / 2 added to the mean cross-entropy


def tokens(text: str) -> list[str]:
    return WORD.findall(text.lower())


def featurize(texts: list[str], vocab: dict[str, int], kind: str) -> torch.Tensor:
    """A sparse (examples x vocabulary) matrix: 1 (binary) or the count (tf) where a text has the word."""
    rows, cols, vals = [], [], []
    for i, text in enumerate(texts):
        for word, n in Counter(tokens(text)).items():
            if word in vocab:
                rows.append(i)
                cols.append(vocab[word])
                vals.append(1.0 if kind == "binary" else float(n))
    return torch.sparse_coo_tensor([rows, cols], vals, (len(texts), len(vocab)), dtype=torch.float64,
                                   check_invariants=True).coalesce()


class LogisticRegression(torch.nn.Module):
    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(num_features, num_classes, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.zeros(num_classes, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(x, self.weight) + self.bias


def fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 300) -> LogisticRegression:
    """Mean cross-entropy + l2 / 2 * ||W||^2 (bias unpenalized), minimized full batch with L-BFGS from zero."""
    model = LogisticRegression(x.shape[1], num_classes)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=1e-8,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y) + 0.5 * l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return (pred == y).double().mean().item()


def macro_f1(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    f1s = []
    for c in range(num_classes):
        tp = ((pred == c) & (y == c)).sum().item()
        fp = ((pred == c) & (y != c)).sum().item()
        fn = ((pred != c) & (y == c)).sum().item()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(f1s) / num_classes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", choices=("binary", "tf"), default="binary")
    ap.add_argument("--min-count", type=int, default=2)
    args = ap.parse_args(argv)

    splits, labels = builtin_task_splits(), builtin_task_labels()
    label_id = {label: i for i, label in enumerate(labels)}
    counts = Counter(w for r in splits["train"] for w in set(tokens(r["text"])))
    vocab = {w: i for i, w in enumerate(sorted(w for w, n in counts.items() if n >= args.min_count))}
    data = {s: (featurize([r["text"] for r in rows], vocab, args.features),
                torch.tensor([label_id[r["label"]] for r in rows]))
            for s, rows in splits.items()}
    k = len(labels)
    majority = Counter(data["train"][1].tolist()).most_common(1)[0][0]

    x, y = data["train"]
    best = None
    for l2 in L2_GRID:
        model = fit(x, y, k, l2)
        with torch.no_grad():
            val_acc = accuracy(model(data["validation"][0]).argmax(-1), data["validation"][1])
        if best is None or val_acc > best[0]:
            best = (val_acc, l2, model)
    _, l2, model = best

    print(f"{BUILTIN_TASK}: {k} classes ({', '.join(labels)}); vocabulary {len(vocab)} words "
          f"(train, min count {args.min_count}), {args.features} features; L2 {l2:g} chosen on validation "
          f"from {', '.join(f'{v:g}' for v in L2_GRID)}")
    print(f"{'split':<11} {'examples':>8} {'majority acc':>12} {'BoW acc':>8} {'BoW macro-F1':>12}")
    for split in ("train", "validation", "test"):
        xs, ys = data[split]
        with torch.no_grad():
            pred = model(xs).argmax(-1)
        print(f"{split:<11} {len(ys):>8} {accuracy(torch.full_like(ys, majority), ys):>12.3f} "
              f"{accuracy(pred, ys):>8.3f} {macro_f1(pred, ys, k):>12.3f}")


if __name__ == "__main__":
    main()
