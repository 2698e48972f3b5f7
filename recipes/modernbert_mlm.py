"""ModernBERT masked-language-model pretraining: the pre-norm, bias-free GeGLU encoder with rotary positions and
alternating global / sliding-window attention, trained with ModernBERT's published recipe scaled to the demo budget
of recipes/bert_mlm.py (same tokenizer, same tokens, about the same parameters: deeper and narrower).

    python recipes/modernbert_mlm.py                                   # small model, built-in corpus, a few CPU minutes
    accelerate launch recipes/modernbert_mlm.py --run.batch_size 64    # any launcher; any --section.key override
    python recipes/modernbert_mlm.py --model.d_model 768 --model.n_layers 22 --model.n_heads 12 --model.d_ff 1152 \\
        --model.max_seq_len 8192 --tokenizer.vocab_size 50368          # ModernBERT-base's shape

Training settings, from AnswerDotAI/ModernBERT, branch pretraining_documentation,
yamls/modernbert/modernbert-base-pretrain.yaml and modernbert-base-learning-rate-decay.yaml:
- mlm_probability 0.3 ("FlexBERT should use 30% masking for optimal performance"; evaluated there at 15%);
- decoupled StableAdamW, lr 8e-4, betas (0.9, 0.98), eps 1e-6, weight decay 1e-5 per step, none on biases and
  norms. torch's AdamW multiplies the decay by the rate, so 1e-5 / 8e-4 = 0.0125 here is the same decay at the peak;
- warmup_stable_decay: linear warmup (3B of 1.7T tokens), a constant rate, then a separate 1-sqrt decay to ~0
  (alpha_f 0.001). At 600 steps warmup keeps bert_mlm's 50 steps (0.17% would be one step) and the 1-sqrt decay
  takes the last 20% (Hagele et al. 2024's matching length; schedule wsd);
- dropout 0 in the embeddings, attention and MLP (their attn_out_dropout 0.1 has no place in our backbone at this
  budget, where every recipe here trains without dropout).
"""
from pretrain.cli import run_recipe

DEFAULTS = {
    # 3 layers of d_ff 192 (GeGLU: 1.5 x d_model, as 1152 / 768): 417k layer weights against bert_mlm's 2 x 197k
    "model": {"preset": "modernbert", "d_model": 128, "n_layers": 3, "n_heads": 2, "d_ff": 192, "max_seq_len": 128},
    "objective": {"name": "mlm", "options": {"mlm_probability": 0.3}},
    "tokenizer": {"kind": "wordpiece", "vocab_size": 8000},
    "optim": {"lr": 8e-4, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.0125, "warmup_steps": 50,
              "schedule": "wsd", "decay_shape": "1-sqrt", "decay_fraction": 0.2, "min_lr_ratio": 0.0},
    "run": {"output_dir": "runs/modernbert_mlm", "seq_len": 128, "batch_size": 32, "max_steps": 600,
            "eval_every": 100, "save_every": 200},
}

if __name__ == "__main__":
    run_recipe(DEFAULTS)
