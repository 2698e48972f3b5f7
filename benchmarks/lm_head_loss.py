"""LM head + cross-entropy, forward and backward: our chunked fused loss (models/fused_ce.py) at several chunk sizes
against the plain path (F.linear, then F.cross_entropy on the full logits), eager and compiled, in one process.
Picks the chunk size per device: the default lives in models.fused_ce.CHUNK_ELEMENTS.

    python benchmarks/lm_head_loss.py                          # GPT-2's head: 16 x 1024 tokens, 768 -> 50257
    python benchmarks/lm_head_loss.py --tokens 2048 --dtype fp32   # CPU-sized
"""
import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from models.fused_ce import CHUNK_ELEMENTS, linear_cross_entropy  # noqa: E402


def plain_loss(hidden, weight, labels):
    return F.cross_entropy(F.linear(hidden, weight).float(), labels)


def time_it(fn, device, steps, warmup):
    times = []
    for i in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16 * 1024)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--exponents", default="21,23,25,26,27,28,29", help="chunk sizes as 2**e logits elements")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    hidden = torch.randn(args.tokens, args.d_model, device=device, requires_grad=True)
    weight = (torch.randn(args.vocab, args.d_model, device=device) * 0.02).requires_grad_()
    labels = torch.randint(0, args.vocab, (args.tokens,), device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()
    flops = 3 * 2 * args.tokens * args.d_model * args.vocab

    def step(loss_fn):
        def run():
            with autocast:
                loss = loss_fn()
            loss.backward()
            hidden.grad = weight.grad = None
        return run

    compiled_plain = torch.compile(plain_loss)
    cases = [("plain eager", lambda: plain_loss(hidden, weight, labels)),
             ("plain compiled", lambda: compiled_plain(hidden, weight, labels))]
    for e in map(int, args.exponents.split(",")):
        rows = max(128, 2 ** e // args.vocab)
        mark = "  (default)" if 2 ** e == CHUNK_ELEMENTS.get(device, CHUNK_ELEMENTS["cpu"]) else ""
        cases.append((f"fused 2^{e} ({rows} rows){mark}",
                      lambda rows=rows: linear_cross_entropy(hidden, weight, None, labels, chunk_size=rows)[0]))
    print(f"device {device}, {args.dtype}, {args.tokens} tokens x {args.d_model} -> {args.vocab}; "
          f"forward + backward, median of {args.steps}")
    base = None
    for name, fn in cases:
        t = time_it(step(fn), device, args.steps, args.warmup)
        base = base or t
        peak = ""
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            step(fn)()
            peak = f"{torch.cuda.max_memory_allocated() / 2**20:>9,.0f} MB"
        print(f"{name:<34}{t * 1e3:>9.2f} ms{base / t:>7.2f}x vs plain eager{flops / t / 1e12:>8.1f} TFLOP/s {peak}",
              flush=True)


if __name__ == "__main__":
    main()
