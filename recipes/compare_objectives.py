"""Compare BERT (MLM), ELECTRA (replaced token detection), GPT-2 (CLM, FIM and the GPT-BERT hybrid), BART (text
infilling) and T5 (span corruption and UL2's mixture of denoisers) on one corpus: one shared tokenizer, models of
matched size (~1.0M parameters each, within 10%), the same training-FLOPs budget (equal compute: each objective
gets the tokens and steps its FLOPs per step buy; the table shows them), then every model probed and fine-tuned on
the built-in downstream task beside a random-init model of its architecture (encoder-decoders also through their
encoder) and a bag-of-words baseline; writes report.md, report.html (self-contained) and results.json into the
output directory (how to read them: docs/compare.md).

    python recipes/compare_objectives.py                                  # built-in corpus: 22 min on 2 CPU cores in fp32
    accelerate launch recipes/compare_objectives.py                       # the same under any launcher (GPUs: data parallel per run)
    python recipes/compare_objectives.py --budget.max_flops 3e13 --output_dir runs/cmp_big
    python recipes/compare_objectives.py --budget.max_flops null --budget.max_tokens 1500000   # equal tokens instead
    python recipes/compare_objectives.py --budget.max_flops null --budget.max_time 300   # equal wall time instead
    python recipes/compare_objectives.py --seeds 3                                       # 3 pretraining seeds each
    python recipes/compare_objectives.py --only bert+mlm,gpt2+clm --data.files 'my_corpus/*.txt'

Give the same command again after an interruption: finished runs are skipped, the current one resumes.
The eight models: d_model 128, 4 heads, the shared ~4.2k vocabulary, embeddings tied everywhere; BERT and ELECTRA
2 layers (ELECTRA's generator, 1/4 as wide, is not counted in the size), GPT-2 2 layers (CLM, FIM, hybrid), BART
1+1 layers, T5 1+1 layers (gated d_ff 384; twice: span corruption and UL2); 7e12 training FLOPs each, what the
former 1.5M corpus tokens cost on average (FLOPs per corpus token here: T5 span 2.4M, hybrid 3.4M, ELECTRA 3.6M
with its generator, BERT 3.7M, UL2 4.5M, GPT-2 5.9M, BART 6.7M, so T5 span reads about 2.9M tokens and BART 1.0M).
BERT masks 30% of the tokens (Wettig et al. 2023; ModernBERT): at this budget 15% left its pseudo-log-likelihood
within the noise of random init on the corpus pairs and its cloze at 0 (docs/comparing.md has the measurement).
"""
import sys

from pretrain.cli import run_guarded
from pretrain.compare.runner import compare_main

COMMON = {"d_model": 128, "n_heads": 4, "max_seq_len": 128, "dropout": 0.0}
RUNS = [
    {"name": "bert+mlm", "model": {"preset": "bert", **COMMON, "n_layers": 2, "d_ff": 512},
     "objective": {"name": "mlm", "options": {"mlm_probability": 0.3}}, "optim": {"lr": 2e-3}},
    {"name": "gpt2+clm", "model": {"preset": "gpt2", **COMMON, "n_layers": 2, "d_ff": 512},
     "objective": {"name": "clm"}, "optim": {"lr": 2e-3, "betas": [0.9, 0.95], "weight_decay": 0.1}},
    {"name": "gpt2+fim", "model": {"preset": "gpt2", **COMMON, "n_layers": 2, "d_ff": 512},
     "objective": {"name": "fim"}, "optim": {"lr": 2e-3, "betas": [0.9, 0.95], "weight_decay": 0.1}},
    {"name": "gpt2+hybrid", "model": {"preset": "gpt2", **COMMON, "n_layers": 2, "d_ff": 512},
     "objective": {"name": "hybrid"}, "optim": {"lr": 2e-3, "betas": [0.9, 0.95], "weight_decay": 0.1}},
    {"name": "electra+rtd", "model": {"preset": "electra", **COMMON, "n_layers": 2, "d_ff": 512},
     "objective": {"name": "electra"}, "optim": {"lr": 2e-3}},
    {"name": "bart+infill", "model": {"preset": "bart", **COMMON, "n_layers": 1, "d_ff": 512},
     "objective": {"name": "infill"}, "optim": {"lr": 2e-3}},
    {"name": "t5+span", "model": {"preset": "t5", **COMMON, "n_layers": 1, "head_dim": 32, "d_ff": 384,
                                  "tie_embeddings": True},
     "objective": {"name": "span"}, "optim": {"lr": 2e-3}},
    {"name": "t5+ul2", "model": {"preset": "t5", **COMMON, "n_layers": 1, "head_dim": 32, "d_ff": 384,
                                 "tie_embeddings": True},
     "objective": {"name": "ul2"}, "optim": {"lr": 2e-3}},
]

DEFAULTS = {
    "output_dir": "runs/compare_objectives",
    "runs": RUNS,
    "tokenizer": {"kind": "bpe", "vocab_size": 4096},
    # equal compute: each run trains the steps its expected FLOPs per step fit in (the trainer's count, ELECTRA's
    # generator included); the same total as 1.5M tokens each gave
    "budget": {"max_tokens": None, "max_flops": 7e12},
    "train": {"seq_len": 128, "batch_size": 16, "eval_batches": 4, "warmup_steps": 30},
    "n_evals": 8,
    # fine-tuned on a seeded 1,000-example sample of the training split: the low-resource setting where
    # pretraining matters most, in half the time; probed and scored on the full splits
    "downstream": {"task": "stdlib-area", "seeds": 3, "task_options": {"max_train": 1000}},
}

if __name__ == "__main__":
    sys.exit(run_guarded(lambda argv: compare_main(argv, DEFAULTS, prog="python recipes/compare_objectives.py"),
                         sys.argv[1:]))
