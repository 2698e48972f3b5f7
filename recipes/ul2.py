"""UL2 mixture-of-denoisers pretraining of a T5 (Tay et al., 2022): each example one of seven denoisers, R (spans of
3 and 8 at 15%, [NLU]), X (50% or spans of 64, [NLG]) or S (prefix LM, [S2S], 20% of the examples).

    python recipes/ul2.py                                        # small model, built-in corpus, a few CPU minutes
    accelerate launch recipes/ul2.py --objective.options '{"s_rate": 0.5}'
"""
from pretrain.cli import run_recipe

DEFAULTS = {
    "model": {"preset": "t5", "d_model": 128, "n_layers": 2, "n_heads": 4, "head_dim": 32, "d_ff": 256,
              "max_seq_len": 128, "dropout": 0.0},
    "objective": {"name": "ul2", "options": {"s_rate": 0.2}},
    "tokenizer": {"kind": "unigram", "vocab_size": 8000},
    "optim": {"lr": 2e-3, "warmup_steps": 50},
    "run": {"output_dir": "runs/ul2", "seq_len": 128, "batch_size": 32, "max_steps": 600, "eval_every": 100,
            "save_every": 200},
}

if __name__ == "__main__":
    run_recipe(DEFAULTS)
