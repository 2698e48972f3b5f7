"""GPT-2 causal-language-model pretraining (byte-level BPE, pre-LN decoder, next-token prediction).

    python recipes/gpt_clm.py                                    # small model, built-in corpus, a few CPU minutes
    accelerate launch recipes/gpt_clm.py --model.preset llama    # same objective, Llama blocks
    python recipes/gpt_clm.py --model.d_model 768 --model.n_layers 12 --model.n_heads 12 --run.seq_len 1024 ...
"""
from pretrain.cli import run_recipe

DEFAULTS = {
    "model": {"preset": "gpt2", "d_model": 128, "n_layers": 2, "n_heads": 2, "d_ff": 512, "max_seq_len": 128,
              "dropout": 0.0},
    "objective": {"name": "clm"},
    "tokenizer": {"kind": "bpe", "vocab_size": 8000},
    "optim": {"lr": 1e-3, "warmup_steps": 50, "betas": [0.9, 0.95], "weight_decay": 0.1},
    "run": {"output_dir": "runs/gpt_clm", "seq_len": 128, "batch_size": 32, "max_steps": 600, "eval_every": 100,
            "save_every": 200},
}

if __name__ == "__main__":
    run_recipe(DEFAULTS)
