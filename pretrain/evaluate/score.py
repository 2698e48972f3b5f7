"""Zero-shot minimal pairs: score both sentences of each pair with one model; a pair is right when the acceptable
sentence scores strictly higher (a tie is wrong, so a model with constant output scores 0%, not 100%).

    scorer = run_scorer(model, objective, tokenizer)        # a run: its objective frames the sentence
    scorer = open_scorer("gpt2" | "exported/" | "runs/x")   # any of them, transformers classes for folders
    result = score_pairs(scorer, pairs)                      # accuracy, stderr, n, skipped, per phenomenon

How a sentence is framed is objectives/scoring.py's: the objective answers for a run (Objective.score_rows), the
model type for a transformers folder. Batched: every row of a sentence goes through the model in the same batch,
sentences are packed into batches up to a token budget; a sentence's score is the float64 sum of its targets'
log-softmax.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from objectives import scoring
from objectives.words import word_start_table

from ..errors import UserError


@dataclass
class Scorer:
    """What the engine needs of a model: its rows per sentence and the logits at chosen outputs."""
    tokenizer: object
    rows: object  # (ids, starts) -> list[ScoreRow]
    logits: object  # (batch, rows, positions) -> [n, vocab]
    method: str
    description: str
    max_length: int | None  # the model's positions (None: no limit)
    pad_id: int
    starts_table: torch.Tensor = field(default=None)

    def __post_init__(self):
        if self.starts_table is None:
            self.starts_table = word_start_table(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def sentence_rows(self, ids: list[int]) -> list:
        starts = self.starts_table[torch.tensor(ids, dtype=torch.long)].tolist() if ids else []
        if starts:
            starts[0] = True
        return self.rows(ids, starts)


def run_scorer(model, objective, tokenizer, variant: str = "word", description: str = "") -> Scorer:
    """A model of this toolkit scored as its objective frames a sentence."""
    positions = objective.model_cfg.max_seq_len  # every model refuses longer input, relative positions too

    def logits(batch, rows, pos):
        return objective.score_logits(model, batch, rows, pos)

    return Scorer(tokenizer, lambda ids, starts: objective.score_rows(ids, starts, variant), logits,
                  objective.score_method(variant), description or f"{objective.name} model", positions,
                  tokenizer.pad_token_id)


# ---- the engine ---------------------------------------------------------------------------------------------------
def _pad(rows: list[tuple], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([list(r) + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
    mask = torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]
    return ids, mask.long()


def _run_batch(scorer: Scorer, rows: list, device) -> torch.Tensor:
    """Float64 log-probabilities of every row's targets, concatenated in row order."""
    ids, mask = _pad([r.input_ids for r in rows], scorer.pad_id)
    batch = {"input_ids": ids.to(device)}
    if not bool(mask.all()):
        batch["attention_mask"] = mask.to(device)
    if rows[0].decoder_input_ids is not None:  # right padding of a causal decoder is invisible to the targets
        batch["decoder_input_ids"] = _pad([r.decoder_input_ids for r in rows], scorer.pad_id)[0].to(device)
    row_index = torch.tensor([k for k, r in enumerate(rows) for _ in r.positions], device=device)
    positions = torch.tensor([p for r in rows for p in r.positions], device=device)
    targets = torch.tensor([t for r in rows for t in r.targets], device=device)
    logp = F.log_softmax(scorer.logits(batch, row_index, positions).float(), dim=-1)
    return logp.gather(1, targets[:, None]).squeeze(1).double().cpu()


@torch.no_grad()
def sentence_scores(scorer: Scorer, sentences: list[list[int]], max_tokens: int = 8192, device=None,
                    progress=None, rows: list[list] | None = None) -> list[float]:
    """The score of each tokenized sentence: all its rows in one batch with those of its neighbours, batches up to
    max_tokens padded tokens (a sentence with more rows than that goes alone). progress: a tqdm-like bar advanced
    by one per sentence, or None. rows: the sentences' rows when the caller has them already."""
    device = device or torch.device("cpu")
    scores = [0.0] * len(sentences)
    pending: list[tuple[int, list]] = []

    def flush():
        rows = [r for _, rs in pending for r in rs]
        if rows:
            logp = _run_batch(scorer, rows, device)
            k = 0
            for i, rs in pending:
                n = sum(len(r.targets) for r in rs)
                scores[i] = float(logp[k:k + n].sum())
                k += n
        if progress is not None:
            progress.update(len(pending))
        pending.clear()

    width = count = 0
    for i, ids in enumerate(sentences):
        these = rows[i] if rows is not None else scorer.sentence_rows(ids)
        w = max(_width(these), 1)
        if pending and max(width, w) * (count + len(these)) > max_tokens:
            flush()
            width = count = 0
        pending.append((i, these))
        width, count = max(width, w), count + len(these)
    flush()
    return scores


def _width(rows: list) -> int:
    return max([len(r.input_ids) for r in rows] + [len(r.decoder_input_ids or ()) for r in rows] + [0])


def accuracy(correct: int, n: int) -> dict:
    p = correct / n if n else 0.0
    return {"accuracy": p, "stderr": math.sqrt(p * (1 - p) / n) if n else 0.0, "n": n, "correct": correct}


def score_pairs(scorer: Scorer, pairs: list, max_tokens: int = 8192, device=None, progress=None) -> dict:
    """Accuracy of one model on pairs (objects with .good, .bad, .group): the whole and per group, plus the pairs
    skipped (identical text, identical tokens, longer than the model's positions) and the scoring method."""
    skipped = {"identical": 0, "same_tokens": 0, "too_long": 0}
    kept, sentences, rows = [], [], []
    for pair in pairs:
        if pair.good == pair.bad:
            skipped["identical"] += 1
            continue
        good, bad = scorer.encode(pair.good), scorer.encode(pair.bad)
        if good == bad:
            skipped["same_tokens"] += 1
            continue
        both = [scorer.sentence_rows(good), scorer.sentence_rows(bad)] if good and bad else []
        if not both or scorer.max_length is not None and max(map(_width, both)) > scorer.max_length:
            skipped["too_long"] += 1
            continue
        kept.append(pair)
        sentences += [good, bad]
        rows += both
    if progress is not None:
        progress.total = len(sentences)
        progress.refresh()
    values = sentence_scores(scorer, sentences, max_tokens, device, progress, rows)
    right = [values[2 * k] > values[2 * k + 1] for k in range(len(kept))]  # strictly higher: a tie is wrong
    groups: dict[str, list[bool]] = {}
    for pair, ok in zip(kept, right):
        groups.setdefault(pair.group, []).append(ok)
    return {**accuracy(sum(right), len(right)), "skipped": skipped, "method": scorer.method,
            "groups": {g: accuracy(sum(v), len(v)) for g, v in sorted(groups.items())}}


def check_scorable(result: dict, source: str):
    if result["n"] == 0:
        s = result["skipped"]
        raise UserError(f"no pair of {source} could be scored ({s['identical']} identical, {s['same_tokens']} "
                        f"identical once tokenized, {s['too_long']} longer than the model's positions); check the "
                        f"pairs")


# ---- opening a model --------------------------------------------------------------------------------------------
HF_SPAN = ("t5", "mt5", "umt5", "longt5")
HF_INFILL = ("bart", "mbart", "plbart")
TOOLKIT_TAG = "unified-pretrain"  # the tag `pretrain export` writes into every model card


def _card_tags(folder: Path) -> list[str]:
    card = folder / "README.md"
    if not card.is_file():
        return []
    from huggingface_hub import ModelCard

    try:
        return list(ModelCard.load(str(card)).data.tags or [])
    except Exception:  # a card without front matter: not one of ours
        return []


def _framing(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts around a text ([CLS] ... [SEP], <s> ... </s>)."""
    plain = tokenizer("a b", add_special_tokens=False)["input_ids"]
    full = tokenizer("a b")["input_ids"]
    for k in range(len(full) - len(plain) + 1):
        if full[k:k + len(plain)] == plain:
            return full[:k], full[k + len(plain):]
    return [], []


def _load_hf(name: str, folder: Path | None):
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM,
                              AutoTokenizer)

    from .classifier import quiet_transformers

    where = str(folder) if folder is not None else name
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(where)
            tokenizer = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError) as e:
        import os

        if folder is None and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
            raise UserError(f"{name} is not a local folder and the Hub is offline (HF_HUB_OFFLINE=1); download it "
                            f"while online or pass a local folder") from None
        raise UserError(f"cannot load {name} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); pass a run, an "
                        f"exported folder or a transformers model id") from None
    names = config.architectures or []
    if config.model_type == "electra" and any(n.endswith("ForPreTraining") for n in names):
        if folder is not None and (folder / "generator" / "config.json").is_file():
            return _load_hf(name + "/generator", folder / "generator")
        raise UserError(f"{name} is an ELECTRA discriminator, which cannot score text; score its generator "
                        f"(an ElectraForMaskedLM)")
    if getattr(config, "is_encoder_decoder", False):
        auto, kind = AutoModelForSeq2SeqLM, "seq2seq"
    elif any(n.endswith("ForMaskedLM") for n in names):
        auto, kind = AutoModelForMaskedLM, "masked"
    elif any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names) or not names:
        auto, kind = AutoModelForCausalLM, "causal"
    else:
        raise UserError(f"{name} ({', '.join(names)}) has no language-model head to score text with; pass a causal, "
                        f"masked or sequence-to-sequence language model")
    with quiet_transformers():
        model = auto.from_pretrained(where, dtype=torch.float32)
    model.eval()
    return model, config, tokenizer, kind, where


def hf_scorer(name: str, variant: str = "word") -> Scorer:
    """A transformers model (a local folder or a Hub id) scored as its type frames a hole: causal LMs from their
    start token, masked LMs by pseudo-log-likelihood, T5 by a sentinel, BART by a mask. A folder written by
    `pretrain export` is framed as its run was trained (decoders after EOS, encoders with EOS at the end)."""
    path = Path(name)
    model, config, tokenizer, kind, where = _load_hf(name, path if path.is_dir() else None)
    tags = _card_tags(Path(where)) if Path(where).is_dir() else []
    if tags == [] and where.endswith("generator"):
        tags = _card_tags(Path(where).parent)
    ours = TOOLKIT_TAG in tags
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    hole = "the token and the rest of its word" if variant == "word" else "the token"
    if kind == "causal":
        start = eos if ours or bos is None else bos
        if start is None:
            raise UserError(f"{name}'s tokenizer has neither a bos nor an eos token to condition the first token on")
        rows = lambda ids, starts: scoring.causal_rows(ids, start)  # noqa: E731
        method = f"sum of token log-probabilities after `{tokenizer.convert_ids_to_tokens(start)}`"
    elif kind == "masked":
        prefix, suffix = ([], [eos]) if ours else _framing(tokenizer)
        rows = lambda ids, starts: scoring.pll_rows(ids, starts, tokenizer.mask_token_id, variant,  # noqa: E731
                                                    prefix, suffix)
        alone = "the token and the rest of its word" if variant == "word" else "the token alone"
        method = f"pseudo-log-likelihood, `{tokenizer.mask_token}` over {alone}"
        if where.endswith("generator"):
            method += ", answered by the generator (the discriminator cannot score text)"
    else:
        start = config.decoder_start_token_id
        if ours and "causal-lm" in tags:
            rows = lambda ids, starts: scoring.prefix_rows(ids, start)  # noqa: E731
            method = "prefix LM: the first token as prefix, the decoder scores the rest"
        elif config.model_type in HF_SPAN:
            sentinel = tokenizer.convert_tokens_to_ids("<extra_id_0>")
            prefix = tokenizer.convert_tokens_to_ids(["[NLU]"]) if "mixture-of-denoisers" in tags else []
            rows = lambda ids, starts: scoring.span_rows(ids, starts, sentinel, start, eos, variant,  # noqa: E731
                                                         prefix)
            method = ("`[NLU]` + " if prefix else "") + (f"`<extra_id_0>` over {hole} in the input, the decoder's "
                                                         f"`<extra_id_0>` then the token scored")
        elif config.model_type in HF_INFILL:
            b = bos if bos is not None else tokenizer.cls_token_id
            rows = lambda ids, starts: scoring.infill_rows(ids, starts, tokenizer.mask_token_id, b, eos,  # noqa
                                                           start, variant)
            method = f"`<mask>` over {hole} in the input, the decoder's reconstruction scored at the token"
        else:
            raise UserError(f"{name} is a {config.model_type} encoder-decoder; scoring knows how T5 "
                            f"({', '.join(HF_SPAN)}) and BART ({', '.join(HF_INFILL)}) frame a hole, not this one")

    def logits(batch, row_index, positions):
        return model(**batch).logits[row_index, positions]

    limit = getattr(config, "max_position_embeddings", None) if config.model_type not in HF_SPAN else None
    return Scorer(tokenizer, rows, logits, method, f"{name} ({type(model).__name__})", limit, tokenizer.pad_token_id)


def open_scorer(name: str, variant: str = "word", checkpoint: str | None = None) -> Scorer:
    """A run directory (its native model and objective), or a transformers folder / Hub id."""
    from .classifier import is_run

    if variant not in scoring.VARIANTS:
        raise UserError(f"unknown scoring variant {variant!r}; use one of {', '.join(scoring.VARIANTS)}")
    path = Path(name)
    if path.is_dir() and is_run(path):
        from ..train.saved_run import load_run_model, load_run_spec

        model, model_cfg, tokenizer, record = load_run_model(path, checkpoint)
        objective = load_run_spec(record, tokenizer, model_cfg).objective
        return run_scorer(model, objective, tokenizer, variant,
                          f"{path} ({record.checkpoint}; objective {objective.name}, {model_cfg.arch})")
    if checkpoint:
        raise UserError(f"--checkpoint applies to run directories; {name} is not one")
    if path.exists() and not path.is_dir():
        raise UserError(f"{name} is a file; pass a run directory, an exported folder or a transformers model id")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"{name} is neither a run directory (no config.yaml / final/) nor a transformers folder "
                        f"(no config.json); pass one of them")
    return hf_scorer(name, variant)
