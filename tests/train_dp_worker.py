"""Worker of tests/test_train_distributed.py: one data-parallel training step of a tiny GPT with CLM, launched
either alone (`python`) or as 2 processes (`torchrun --nproc_per_node 2`). Each rank writes what it saw."""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from models import ModelConfig, Transformer
from objectives import build_objective
from pretrain.train.build import make_accelerator
from pretrain.train.config import OptimSection, RunSection
from pretrain.train.trainer import Trainer


class RecordingBlocks:
    """Training blocks that remember which rows were read."""

    def __init__(self, data):
        self.data, self.seen = data, []

    def __len__(self):
        return len(self.data)

    def __getitem__(self, rows):
        self.seen.extend(rows)
        return {"input_ids": self.data[rows]}


def tokenizer():
    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(61)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def main(out: str, batch_size: int, steps: int):
    out = Path(out)
    tok = tokenizer()
    mc = ModelConfig.preset("gpt2", d_model=32, n_layers=1, n_heads=2, d_ff=64, vocab_size=len(tok), max_seq_len=32,
                            dropout=0.0)
    objective = build_objective("clm", tok, mc)
    seq_len = 16
    block_length = objective.block_length(seq_len)
    data = torch.randint(3, len(tok), (32, block_length), generator=torch.Generator().manual_seed(0))
    train = RecordingBlocks(data)
    run = RunSection(output_dir=str(out / "run"), batch_size=batch_size, max_steps=steps, seq_len=seq_len,
                     eval_every=1000, save_every=1000, progress=False, mixed_precision="no", dist_timeout=60)
    cfg = SimpleNamespace(run=run, optim=OptimSection(lr=1e-2, warmup_steps=0, schedule="constant"))
    acc = make_accelerator(cfg, out / "run", None)
    torch.manual_seed(0)
    model = Transformer(mc)
    trainer = Trainer(cfg, model, objective, block_length, train, data[:8], out / "run", acc, {"arch": mc.arch})
    trainer.train()
    params = {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}
    torch.save(params, out / f"params_{acc.process_index}.pt")
    (out / f"rank_{acc.process_index}.json").write_text(json.dumps(
        {"rank": acc.process_index, "world_size": acc.num_processes, "seen": [int(i) for i in train.seen],
         "backend": str(torch.distributed.get_backend()) if torch.distributed.is_initialized() else None}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
