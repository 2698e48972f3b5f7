"""T5 span-corruption pretraining (Unigram tokenizer with 100 sentinels; 15% noise in spans of mean length 3;
the decoder predicts sentinel + span for each span).

    python recipes/t5_span.py                                    # small model, built-in corpus, a few CPU minutes
    accelerate launch recipes/t5_span.py --objective.options '{"noise_density": 0.3}'
"""
from pretrain.cli import run_recipe

DEFAULTS = {
    "model": {"preset": "t5", "d_model": 128, "n_layers": 2, "n_heads": 4, "head_dim": 32, "d_ff": 256,
              "max_seq_len": 128, "dropout": 0.0},
    "objective": {"name": "span"},
    "tokenizer": {"kind": "unigram", "vocab_size": 8000},
    "optim": {"lr": 2e-3, "warmup_steps": 50},
    "run": {"output_dir": "runs/t5_span", "seq_len": 128, "batch_size": 32, "max_steps": 600, "eval_every": 100,
            "save_every": 200},
}

if __name__ == "__main__":
    run_recipe(DEFAULTS)
