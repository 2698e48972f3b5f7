"""ELECTRA in a plain training loop with transformers' own classes, beside a run of our trainer at the same settings:
is a discriminator that stays near chance the budget, a setting, or a defect of our objective or trainer?

    python benchmarks/electra_plain_loop.py RUN [--eval-every 100] [--eval-batches 8]

RUN is a finished ELECTRA run (e.g. the comparison's OUT/runs/electra_rtd). The loop rebuilds its blocks, batch
size, step count, learning rate, betas, weight decay, warmup and schedule from the run's config, starts from the
same kind of initialization (a fresh model of the run's config and seed, converted to ElectraForPreTraining and
ElectraForMaskedLM, the generator reading the discriminator's embeddings as in google-research/electra), and trains
them with its own masking, sampling and loss written from the paper: 15% of the non-special tokens selected, 85%
of those become [MASK] and the rest stay, the generator's softmax sampled at temperature 1 (torch.multinomial), a
token counts as replaced when the sample differs from the original, loss = generator MLM cross-entropy + 50 x the
discriminator's binary cross-entropy over every token. Nothing of objectives/electra.py runs here.

Prints the validation curve of both (discriminator AUC, generator accuracy) at the same steps, measured each with
its own masks on the same validation blocks: if the plain loop learns where our run does not, the defect is ours.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from models import Transformer  # noqa: E402
from models.convert import to_transformers  # noqa: E402
from objectives.electra_generator import to_transformers as generator_to_transformers  # noqa: E402
from pretrain.data.corpus import quiet_datasets  # noqa: E402
from pretrain.data.order import get_blocks  # noqa: E402
from pretrain.train.build import corpus_blocks, run_spec  # noqa: E402
from pretrain.train.optim import lr_factor  # noqa: E402
from pretrain.train.saved_run import load_run_model  # noqa: E402

MASK_RATE, KEEP_SHARE, DISC_WEIGHT = 0.15, 0.15, 50.0  # google-research/electra's pretraining defaults


def rank_auc(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """Area under the ROC curve: the share of (replaced, original) pairs ranked right, ties counted half."""
    pos, neg = scores[truth].double(), scores[~truth].double()
    if len(pos) == 0 or len(neg) == 0:
        return 0.5
    neg = neg.sort().values
    below = torch.searchsorted(neg, pos).double()
    tied = torch.searchsorted(neg, pos, right=True).double() - below
    return float((below + 0.5 * tied).sum() / (len(pos) * len(neg)))


def corrupt(ids, special, mask_id, gen, generator):
    """(generator logits at the selected positions, their original tokens, the discriminator's input, its labels)."""
    u = torch.rand(ids.shape, generator=generator)
    selected = (u < MASK_RATE) & ~special
    to_mask = selected & (torch.rand(ids.shape, generator=generator) >= KEEP_SHARE)
    masked = ids.masked_fill(to_mask, mask_id)
    logits = gen(input_ids=masked).logits[selected]
    sampled = torch.multinomial(logits.detach().float().softmax(-1), 1, generator=generator).squeeze(-1)
    corrupted = ids.clone()
    corrupted[selected] = sampled
    return logits, ids[selected], corrupted, corrupted != ids


def step_loss(ids, special, mask_id, gen, disc, generator):
    logits, targets, corrupted, replaced = corrupt(ids, special, mask_id, gen, generator)
    gen_loss = F.cross_entropy(logits.float(), targets)
    disc_logits = disc(input_ids=corrupted).logits.float()
    disc_loss = F.binary_cross_entropy_with_logits(disc_logits, replaced.float())
    return gen_loss + DISC_WEIGHT * disc_loss, logits, targets, disc_logits, replaced


@torch.no_grad()
def validate(val, batch_size, n_batches, special_of, mask_id, gen, disc) -> dict:
    gen.eval(), disc.eval()
    generator = torch.Generator().manual_seed(1234)
    scores, truth, hits, n = [], [], 0, 0
    for i in range(n_batches):
        ids = val[i * batch_size:(i + 1) * batch_size]
        if len(ids) == 0:
            break
        _, logits, targets, disc_logits, replaced = step_loss(ids, special_of(ids), mask_id, gen, disc, generator)
        scores.append(disc_logits.flatten()), truth.append(replaced.flatten())
        hits, n = hits + int((logits.argmax(-1) == targets).sum()), n + len(targets)
    gen.train(), disc.train()
    return {"disc_auc": rank_auc(torch.cat(scores), torch.cat(truth)), "gen_accuracy": hits / max(n, 1)}


def our_curve(record) -> dict[int, dict]:
    return {r["step"]: r for r in record.metrics if r.get("split") == "val" and "disc_auc" in r}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-batches", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())

    _, model_cfg, tokenizer, record = load_run_model(args.run)
    cfg = record.config
    if cfg.objective.name != "electra":
        print(f"{args.run} trained '{cfg.objective.name}', not electra; pass an ELECTRA run", file=sys.stderr)
        return 2
    torch.manual_seed(cfg.run.seed)
    fresh = Transformer(model_cfg)
    spec = run_spec(cfg, tokenizer, model_cfg)
    disc = to_transformers(fresh, "electra").train()
    gen = generator_to_transformers(fresh, spec.objective.module).train()
    gen.electra.embeddings = disc.electra.embeddings  # shared, as google-research/electra does
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    with quiet_datasets():
        train_blocks, val_blocks = corpus_blocks(cfg, tokenizer, spec.block_length)
    train = get_blocks(train_blocks, torch.arange(len(train_blocks)))
    val = get_blocks(val_blocks, torch.arange(len(val_blocks)))
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    mask_id = tokenizer.mask_token_id

    def special_of(ids):
        return torch.isin(ids, special_ids)

    params = {id(p): (n, p) for m in (disc, gen) for n, p in m.named_parameters()}.values()
    decay = [p for n, p in params if p.ndim >= 2 and "embeddings" not in n]
    rest = [p for n, p in params if not (p.ndim >= 2 and "embeddings" not in n)]
    o = cfg.optim
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    steps, bs = record.step, cfg.run.batch_size
    generator = torch.Generator().manual_seed(cfg.run.seed)
    order = torch.randperm(len(train), generator=generator)
    ours = our_curve(record)
    print(f"plain loop: ElectraForPreTraining + ElectraForMaskedLM, {steps} steps of {bs} x {train.shape[1]}, "
          f"lr {o.lr} ({o.schedule}, warmup {o.warmup_steps}); our run: {args.run}")
    print(f"{'step':>6} {'plain AUC':>10} {'ours AUC':>9} {'plain gen acc':>14} {'ours gen acc':>13}")
    start, position = time.perf_counter(), 0
    for step in range(steps):
        if position + bs > len(order):
            order, position = torch.randperm(len(train), generator=generator), 0
        ids = train[order[position:position + bs]]
        position += bs
        progress = max(0, step - o.warmup_steps) / max(1, steps - o.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = o.lr * lr_factor(step, progress, o)
        loss = step_loss(ids, special_of(ids), mask_id, gen, disc, generator)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], o.grad_clip)
        optimizer.step()
        done = step + 1
        if done % args.eval_every == 0 or done == steps:
            plain = validate(val, bs, args.eval_batches, special_of, mask_id, gen, disc)
            near = min(ours, key=lambda s: abs(s - done)) if ours else None
            theirs = ours.get(near, {})
            print(f"{done:>6} {plain['disc_auc']:>10.4f} {theirs.get('disc_auc', float('nan')):>9.4f} "
                  f"{plain['gen_accuracy']:>14.4f} {theirs.get('gen_accuracy', float('nan')):>13.4f}"
                  + (f"   (ours at step {near})" if near not in (None, done) else ""), flush=True)
    print(f"plain loop: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
