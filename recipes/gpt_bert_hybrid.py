"""GPT-BERT hybrid pretraining (Charpentier & Samuel 2024): one GPT-2 decoder trained on causal LM (1 example in 16)
and masked next-token prediction (the rest: 15% of tokens hidden in spans of 1-3, each predicted from the position
before it with bidirectional attention); exports as GPT2LMHeadModel / LlamaForCausalLM. See docs/hybrid.md.

    python recipes/gpt_bert_hybrid.py                                  # small model, built-in corpus, CPU minutes
    accelerate launch recipes/gpt_bert_hybrid.py --model.preset llama  # same objective, Llama blocks
    python recipes/gpt_bert_hybrid.py --objective.options '{"causal_share": 0.5, "mask_probability": 0.3}'
"""
from pretrain.cli import run_recipe

DEFAULTS = {
    "model": {"preset": "gpt2", "d_model": 128, "n_layers": 2, "n_heads": 2, "d_ff": 512, "max_seq_len": 128,
              "dropout": 0.0},
    "objective": {"name": "hybrid"},
    "tokenizer": {"kind": "bpe", "vocab_size": 8000},
    "optim": {"lr": 1e-3, "warmup_steps": 50, "betas": [0.9, 0.95], "weight_decay": 0.1},
    "run": {"output_dir": "runs/gpt_bert_hybrid", "seq_len": 128, "batch_size": 32, "max_steps": 600,
            "eval_every": 100, "save_every": 200},
}

if __name__ == "__main__":
    run_recipe(DEFAULTS)
