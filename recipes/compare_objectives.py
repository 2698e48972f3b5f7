"""Compare BERT (MLM), GPT-2 (CLM), BART (text infilling) and T5 (span corruption) on one corpus: one shared
tokenizer, models of matched size (~2.0M parameters each, within 10%), the same token budget; writes
report.md, report.html (self-contained) and results.json into the output directory.

    python recipes/compare_objectives.py                                  # built-in corpus: ~8 min on 2 busy CPU cores
    accelerate launch recipes/compare_objectives.py                       # the same under any launcher (GPUs: data parallel per run)
    python recipes/compare_objectives.py --budget.max_tokens 5000000 --output_dir runs/cmp_big
    python recipes/compare_objectives.py --budget.max_tokens null --budget.max_time 300   # equal wall time instead
    python recipes/compare_objectives.py --only bert+mlm,gpt2+clm --data.files 'my_corpus/*.txt'

Give the same command again after an interruption: finished runs are skipped, the current one resumes.
"""
import sys

from pretrain.cli import run_guarded
from pretrain.compare import compare_main

DEFAULTS = {
    "output_dir": "runs/compare_objectives",
    "tokenizer": {"kind": "bpe", "vocab_size": 8000},
    "budget": {"max_tokens": 250_000},
    "train": {"seq_len": 128, "batch_size": 16, "eval_batches": 4, "warmup_steps": 30},
    "n_evals": 8,
}

if __name__ == "__main__":
    sys.exit(run_guarded(lambda argv: compare_main(argv, DEFAULTS, prog="python recipes/compare_objectives.py"),
                         sys.argv[1:]))
