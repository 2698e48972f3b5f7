"""Full training step (forward, loss, backward, AdamW) of our backbone + objective against the `transformers` class
with the same hyper-parameters and the same batch, alternating the two in one process so the ratio is honest.

    python benchmarks/train_step.py                       # small and medium, fp32 (+ bf16 where the CPU has it)
    python benchmarks/train_step.py --sizes small --dtypes fp32,bf16 --compile --steps 10
    python benchmarks/train_step.py --documents both      # with and without objective.document_masking
    python benchmarks/train_step.py --documents on --compile --flex   # GPU: document masks by SDPA and by Flex
    benchmarks/gpu_check.sh                               # GPU: GPT-2 124M and BERT-base, bf16, compiled

Prints, per case: median step time, tokens/s of both, the ratio, MFU against this machine's measured matmul rate,
and peak memory (CUDA: max allocated; CPU: peak RSS of a child process running just that implementation)."""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_cases import build_case, cpu_has_native_bf16, measure_matmul_tflops  # noqa: E402
from pretrain.train.hardware import KNOWN_PEAKS  # noqa: E402


def autocast(dtype, device):
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def make_step(model, loss_fn, dtype, device):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=True)  # the trainer's default, both sides

    def step():
        with autocast(dtype, device):
            loss = loss_fn(model)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def timed(step, device):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_pair(case, dtype, device, steps, warmup, compile_model):
    ours, theirs = case["ours"], case["theirs"]
    compile_s = 0.0
    if compile_model:
        start = time.perf_counter()
        ours["model"].compile()  # in place, as the trainer does (ours: the LM-head loss too, on a GPU)
        theirs["model"].compile()
    run_ours = make_step(ours["model"], ours["loss"], dtype, device)
    run_theirs = make_step(theirs["model"], theirs["loss"], dtype, device)
    for _ in range(warmup):
        run_ours(), run_theirs()
    if compile_model:
        compile_s = time.perf_counter() - start
    t_ours, t_theirs = [], []
    for i in range(steps):  # alternate, and alternate who goes first
        if i % 2:
            t_ours.append(timed(run_ours, device)), t_theirs.append(timed(run_theirs, device))
        else:
            t_theirs.append(timed(run_theirs, device)), t_ours.append(timed(run_ours, device))
    return statistics.median(t_ours), statistics.median(t_theirs), compile_s


def peak_memory_child(args, which):
    """Peak memory of one implementation alone: a child process on CPU (RSS), or max_allocated on CUDA."""
    cmd = [sys.executable, __file__, "--child", json.dumps({**args, "which": which})]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the parent (which
    holds both models), so it would hide the child's own peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # macOS counts bytes, Linux KiB


def child(spec):
    """Peak memory of one implementation: CUDA max allocated, or on CPU the peak RSS above the RSS after imports."""
    device = spec["device"]
    baseline = peak_rss_mb()
    case = build_case(spec["family"], spec["size"], device, sides=(spec["which"],), documents=spec["documents"],
                      attention_dropout=spec.get("attention_dropout"))
    side = case[spec["which"]]
    step = make_step(side["model"], side["loss"], spec["dtype"], device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        step()
    if device == "cuda":
        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        print(peak_rss_mb() - baseline)


def modes(args) -> list[tuple[bool, bool, str]]:
    """(compiled, documents, attention kernel) of each row of one case: --flex adds a FlexAttention row after
    each compiled row with documents."""
    documents = {"off": [False], "on": [True], "both": [False, True]}[args.documents]
    compiled = [True] if args.compile and args.compiled_only else [False, True] if args.compile else [False]
    rows = [(c, d, "sdpa") for d in documents for c in compiled]
    return [r for row in rows for r in ([row, (True, True, "flex")] if args.flex and row[:2] == (True, True)
                                        else [row])]


def peak_tflops(given: float | None, dtype: str, device: str) -> float:
    """The MFU denominator: --peak-tflops, else a GPU's known dense peak (pretrain.train.hardware), else the
    measured matmul rate of this device."""
    if given:
        return given
    if device == "cuda":
        name = torch.cuda.get_device_name()
        known = next((v for k, v in KNOWN_PEAKS.items() if k in name), None)
        if known:
            return (known if dtype == "bf16" else known / 2) / 1e12
    return measure_matmul_tflops(dtype, device)


def mode_name(compiled: bool, documents: bool, kernel: str) -> str:
    return ("compile" if compiled else "eager") + ("+doc" if documents else "") + ("+flex" if kernel == "flex" else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="bert,gpt2,bart,t5")
    parser.add_argument("--sizes", default="small,medium")
    parser.add_argument("--dtypes", default=None, help="fp32,bf16 (default: bf16 only where the CPU/GPU has it)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (reported separately)")
    parser.add_argument("--compiled-only", action="store_true", help="with --compile: skip the eager rows")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--documents", choices=("off", "on", "both"), default="off",
                        help="ours with objective.document_masking (mode 'docs'), without it, or both")
    parser.add_argument("--flex", action="store_true",
                        help="with --compile and --documents on|both (GPU): also ours with FlexAttention document "
                             "masks; every case then runs without attention dropout, both sides (Flex has none)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="MFU against this peak (default: the known dense bf16 peak of the GPU, halved for fp32; "
                             "on CPU or an unknown GPU the measured matmul rate)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.flex and (device == "cpu" or not args.compile or args.documents == "off"):
        sys.exit("--flex needs a GPU (torch's FlexAttention has no backward pass on CPU), --compile and "
                 "--documents on|both")
    if args.flex and "t5" in args.families.split(","):
        sys.exit("--flex: T5's relative position bias does not go through FlexAttention here; leave t5 out of "
                 "--families")
    native_bf16 = device == "cuda" or cpu_has_native_bf16()
    dtypes = args.dtypes.split(",") if args.dtypes else (["fp32", "bf16"] if native_bf16 else ["fp32"])
    peaks = {d: peak_tflops(args.peak_tflops, d, device) for d in dtypes}
    where = torch.cuda.get_device_name() if device == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {device} ({where}), torch {torch.__version__}; MFU peak: "
          + ", ".join(f"{d} {p * 1e3:.0f} GFLOP/s" for d, p in peaks.items())
          + ("" if native_bf16 else "  (no native bf16 on this CPU: bf16 skipped unless --dtypes asks for it)"))
    header = (f"{'case':<22}{'dtype':<6}{'mode':<16}{'ours tok/s':>11}{'ref tok/s':>11}{'ratio':>7}"
              f"{'ours MFU':>9}{'ref MFU':>9}{'ours MB':>9}{'ref MB':>9}{'compile s':>10}")
    print(header)
    for size in args.sizes.split(","):
        for family in args.families.split(","):
            for dtype in dtypes:
                for compiled, documents, kernel in modes(args):
                    torch.manual_seed(0)
                    case = build_case(family, size, device, documents=documents, kernel=kernel,
                                      attention_dropout=0.0 if args.flex else None)
                    t_ours, t_ref, compile_s = bench_pair(case, dtype, device, args.steps, args.warmup, compiled)
                    tokens = case["tokens"]
                    mfu = lambda t, side: case[side]["flops"] / t / (peaks[dtype] * 1e12)  # noqa: E731
                    mem = ("", "")
                    if not args.no_memory and not compiled:
                        spec = dict(family=family, size=size, dtype=dtype, device=device, documents=documents,
                                    attention_dropout=0.0 if args.flex else None)
                        mem = tuple(f"{peak_memory_child(spec, w):.0f}" for w in ("ours", "theirs"))
                    print(f"{case['name'] + ' ' + size:<22}{dtype:<6}{mode_name(compiled, documents, kernel):<16}"
                          f"{tokens / t_ours:>11,.0f}{tokens / t_ref:>11,.0f}{t_ref / t_ours:>6.2f}x"
                          f"{mfu(t_ours, 'ours'):>9.1%}{mfu(t_ref, 'theirs'):>9.1%}{mem[0]:>9}{mem[1]:>9}"
                          f"{(f'{compile_s:.0f}' if compiled else ''):>10}", flush=True)


if __name__ == "__main__":
    main()
