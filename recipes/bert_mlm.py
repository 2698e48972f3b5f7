"""BERT masked-language-model pretraining (WordPiece, 15% masking, post-LN encoder).

    python recipes/bert_mlm.py                                   # small model, built-in corpus, a few CPU minutes
    accelerate launch recipes/bert_mlm.py --run.batch_size 64    # any launcher; any --section.key override
    python recipes/bert_mlm.py --config recipes/configs/bert_base.yaml   # BERT-base scale (see the README)
"""
from pretrain.cli import run_recipe

DEFAULTS = {
    "model": {"preset": "bert", "d_model": 128, "n_layers": 2, "n_heads": 2, "d_ff": 512, "max_seq_len": 128,
              "dropout": 0.0},
    "objective": {"name": "mlm", "options": {"mlm_probability": 0.15}},
    "tokenizer": {"kind": "wordpiece", "vocab_size": 8000},
    "optim": {"lr": 1e-3, "warmup_steps": 50},
    "run": {"output_dir": "runs/bert_mlm", "seq_len": 128, "batch_size": 32, "max_steps": 600, "eval_every": 100,
            "save_every": 200},
}

if __name__ == "__main__":
    run_recipe(DEFAULTS)
