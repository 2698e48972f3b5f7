"""The Ettin question on your corpus: one ModernBERT-shaped backbone trained as an encoder (masked LM, 30%) and as
a decoder (causal LM), same data, same tokenizer, same training FLOPs and the same ModernBERT optimizer settings
(recipes/modernbert_mlm.py), then scored with the comparison's measures (validation loss, cloze, fine-tuning and
probing beside a random-init model); writes report.md, report.html and results.json into the output directory.

    python recipes/compare_encoder_decoder.py                                    # built-in corpus, CPU minutes
    python recipes/compare_encoder_decoder.py --seeds 3 --data.files 'my_corpus/*.txt'
    python recipes/compare_encoder_decoder.py --budget.max_flops null --budget.max_tokens 3000000   # equal tokens

Only the attention mask and the objective differ: both arms are d_model 128, 3 layers (global, local, local;
window 128 - in the decoder the 64 latest tokens), 2 heads, GeGLU d_ff 192, tied decoder with the prediction head.
Equal FLOPs (pretrain/compare: each run trains the steps its expected FLOPs per step fit in) gives the encoder more
tokens, since it projects only its masked 30% onto the vocabulary.
"""
import sys

from pretrain.cli import run_guarded
from pretrain.compare.runner import compare_main

SHAPE = {"d_model": 128, "n_layers": 3, "n_heads": 2, "d_ff": 192, "max_seq_len": 128}
OPTIM = {"lr": 8e-4, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.0125, "schedule": "wsd",
         "decay_shape": "1-sqrt", "decay_fraction": 0.2, "min_lr_ratio": 0.0}
RUNS = [
    {"name": "modernbert+mlm", "model": {"preset": "modernbert", **SHAPE},
     "objective": {"name": "mlm", "options": {"mlm_probability": 0.3}}, "optim": OPTIM},
    {"name": "modernbert_decoder+clm", "model": {"preset": "modernbert_decoder", **SHAPE},
     "objective": {"name": "clm"}, "optim": OPTIM},
]

DEFAULTS = {
    "output_dir": "runs/compare_encoder_decoder",
    "runs": RUNS,
    "tokenizer": {"kind": "bpe", "vocab_size": 4096},
    "budget": {"max_tokens": None, "max_flops": 1e13},  # ~1.5M tokens for the decoder, as compare_objectives.py
    "train": {"seq_len": 128, "batch_size": 16, "eval_batches": 4, "warmup_steps": 30},
    "n_evals": 8,
    "downstream": {"task": "stdlib-area", "seeds": 3, "task_options": {"max_train": 1000}},
}

if __name__ == "__main__":
    sys.exit(run_guarded(lambda argv: compare_main(argv, DEFAULTS, prog="python recipes/compare_encoder_decoder.py"),
                         sys.argv[1:]))
