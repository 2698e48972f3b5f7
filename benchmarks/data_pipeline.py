"""Corpus -> packed blocks throughput: our pack() next to Hugging Face run_mlm.py's map(tokenize) + group_texts
and next to the raw Rust `Tokenizer.encode_batch`, with the same tokenizer on the same documents.

    python benchmarks/data_pipeline.py [PATH] [--kind wordpiece] [--vocab-size 8000] [--block 128] [--repeat 3]
    python benchmarks/data_pipeline.py --scale [--sizes 50,200,1000] [--workers 2,1]   # see data_scale.py

PATH defaults to ../shared/data/tinyshakespeare.txt (relative to the repository root). Targets: ours not slower
than the run_mlm.py way, and within 2x of raw encode_batch. Each figure is the best of --repeat runs; ours is timed
cold (fresh cache dir: tokenize, cut, save, reload) and warm (cache hit).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import datasets  # noqa: E402

from pretrain.data.corpus import DataConfig, load_corpus  # noqa: E402
from pretrain.data.packing import pack  # noqa: E402
from pretrain.data.tokenizer import train_tokenizer  # noqa: E402


def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def run_mlm_way(texts, tokenizer, block_size: int):
    """transformers/examples/pytorch/language-modeling/run_mlm.py (line_by_line False), verbatim in substance."""
    def tokenize_function(examples):
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = len(concatenated[list(examples.keys())[0]])
        total_length = (total_length // block_size) * block_size
        return {k: [t[i: i + block_size] for i in range(0, total_length, block_size)]
                for k, t in concatenated.items()}

    tokenized = texts.map(tokenize_function, batched=True, remove_columns=["text"])
    return tokenized.map(group_texts, batched=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
    parser.add_argument("--kind", default="wordpiece", choices=["wordpiece", "bpe", "unigram", "char"])
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", action="store_true", help="prepare generated corpora of growing size instead "
                                                             "(benchmarks/data_scale.py)")
    parser.add_argument("--sizes", default="50,200,1000", help="--scale: corpus sizes in MB")
    parser.add_argument("--workers", default=None, help="--scale: worker counts (default: the cores, then 1)")
    args = parser.parse_args()
    if args.scale:
        from data_scale import scale_main

        return scale_main(argparse.Namespace(source=args.path, sizes=args.sizes, workers=args.workers))
    datasets.disable_progress_bars()

    train, _ = load_corpus(DataConfig(files=[args.path], validation_fraction=0.0))
    docs = list(train[:]["text"])
    texts = datasets.Dataset.from_dict({"text": docs})  # in memory for every method: no datasets map caching
    tokenizer = train_tokenizer(args.kind, args.vocab_size, texts, progress=False)
    backend = tokenizer.backend_tokenizer
    n_chars = sum(map(len, docs))

    t_raw, encodings = best_of(args.repeat, lambda: backend.encode_batch(docs, add_special_tokens=False))
    n_tokens = sum(len(e.ids) for e in encodings) + len(docs)  # + one eos per document
    t_fast, _ = best_of(args.repeat, lambda: backend.encode_batch_fast(docs, add_special_tokens=False))
    t_mlm, grouped = best_of(args.repeat, lambda: run_mlm_way(texts, tokenizer, args.block))
    with tempfile.TemporaryDirectory() as cache:
        dirs = iter(range(args.repeat))
        t_cold, ours = best_of(args.repeat, lambda: pack(texts, tokenizer, args.block, f"{cache}/{next(dirs)}"))
        t_warm, _ = best_of(args.repeat, lambda: pack(texts, tokenizer, args.block, f"{cache}/0"))
        n_blocks = len(ours)

    print(f"corpus {args.path}: {len(docs):,} documents, {n_chars / 1e6:.2f} M chars, {n_tokens:,} tokens "
          f"({args.kind} vocab {len(tokenizer)}), blocks of {args.block}: ours {n_blocks:,}, run_mlm {len(grouped):,}")
    print(f"{'pipeline':48s} {'seconds':>8s} {'tokens/s':>12s} {'vs ours':>8s}")
    rows = [("raw Tokenizer.encode_batch (no packing)", t_raw),
            ("raw encode_batch_fast (no offsets; ours uses it)", t_fast),
            ("run_mlm.py map(tokenize) + group_texts", t_mlm),
            ("ours pack() cold (tokenize, cut, save, load)", t_cold), ("ours pack() warm (cache hit)", t_warm)]
    for name, t in rows:
        print(f"{name:48s} {t:8.3f} {n_tokens / t:12,.0f} {t / t_cold:7.2f}x")
    print(f"ours vs run_mlm.py: {t_mlm / t_cold:.2f}x faster (target >= 1); ours / raw encode_batch time: "
          f"{t_cold / t_raw:.2f}x (target <= 2)")


if __name__ == "__main__":
    main()
