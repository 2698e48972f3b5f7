"""GPT-2 fill-in-the-middle pretraining (Bavarian et al., 2022): half of the documents reordered prefix / suffix /
middle around <fim_prefix> <fim_suffix> <fim_middle>, half of those in SPM order; the rest left to right.

    python recipes/gpt_fim.py                                    # small model, built-in corpus, a few CPU minutes
    python recipes/gpt_fim.py --objective.options '{"fim_rate": 0.9}'   # Code Llama's rate
"""
from pretrain.cli import run_recipe

DEFAULTS = {
    "model": {"preset": "gpt2", "d_model": 128, "n_layers": 2, "n_heads": 2, "d_ff": 512, "max_seq_len": 128,
              "dropout": 0.0},
    "objective": {"name": "fim", "options": {"fim_rate": 0.5, "spm_rate": 0.5}},
    "tokenizer": {"kind": "bpe", "vocab_size": 8000},
    "optim": {"lr": 1e-3, "warmup_steps": 50, "betas": [0.9, 0.95], "weight_decay": 0.1},
    "run": {"output_dir": "runs/gpt_fim", "seq_len": 128, "batch_size": 32, "max_steps": 600, "eval_every": 100,
            "save_every": 200},
}

if __name__ == "__main__":
    run_recipe(DEFAULTS)
