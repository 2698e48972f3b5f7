"""BART text-infilling pretraining (byte-level BPE; 30% of words masked in Poisson(3) spans, one <mask> per span;
the decoder reconstructs the original text).

    python recipes/bart_infill.py                                # small model, built-in corpus, a few CPU minutes
    accelerate launch recipes/bart_infill.py --objective.options '{"permute_sentences": true}'
"""
from pretrain.cli import run_recipe

DEFAULTS = {
    "model": {"preset": "bart", "d_model": 128, "n_layers": 2, "n_heads": 2, "d_ff": 512, "max_seq_len": 128,
              "dropout": 0.0},
    "objective": {"name": "infill"},
    "tokenizer": {"kind": "bpe", "vocab_size": 8000},
    "optim": {"lr": 1e-3, "warmup_steps": 50},
    "run": {"output_dir": "runs/bart_infill", "seq_len": 128, "batch_size": 16, "max_steps": 600,
            "eval_every": 100, "save_every": 200},
}

if __name__ == "__main__":
    run_recipe(DEFAULTS)
