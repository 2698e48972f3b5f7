"""ELECTRA replaced-token-detection pretraining (Clark et al., 2020): a generator 1/4 as wide (same depth) learns
MLM on 15% masked tokens; the discriminator (the model) tells every token original or replaced by a generator
sample; loss = generator loss + 50 x discriminator loss. Exports the discriminator as ElectraForPreTraining and the
generator as ElectraForMaskedLM (in generator/).

    python recipes/electra_rtd.py                                # small model, built-in corpus, a few CPU minutes
    python recipes/electra_rtd.py --objective.options '{"generator_size": 0.333, "disc_weight": 50}'
    pretrain export runs/electra_rtd --out electra-small          # + electra-small/generator/
"""
from pretrain.cli import run_recipe

DEFAULTS = {
    "model": {"preset": "electra", "d_model": 128, "n_layers": 2, "n_heads": 2, "d_ff": 512, "max_seq_len": 128,
              "dropout": 0.0},
    "objective": {"name": "electra", "options": {"mlm_probability": 0.15, "generator_size": 0.25, "disc_weight": 50.0}},
    "tokenizer": {"kind": "wordpiece", "vocab_size": 8000},
    "optim": {"lr": 1e-3, "warmup_steps": 50},
    "run": {"output_dir": "runs/electra_rtd", "seq_len": 128, "batch_size": 32, "max_steps": 600, "eval_every": 100,
            "save_every": 200},
}

if __name__ == "__main__":
    run_recipe(DEFAULTS)
