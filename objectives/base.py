"""The interface every objective implements, the registry of objectives, and the helpers several of them share.

An objective is one file with one `@register`ed subclass of `Objective`. It is built for a tokenizer and a model
config (`build_objective(name, tokenizer, model_cfg, documents=False, **options)`), so it checks the architecture
and fixes its framing (prefix LM or not, the decoder start token) once; one that sets `document_aware` also takes
documents=True and then keeps every example's attention inside its packed documents (segment ids). It turns
packed blocks of token ids into a batch (`collate`, CPU, all randomness from an explicit torch.Generator so a
resumed run draws the same masks) and a batch plus a model into a loss (`loss`). It carries what the rest of the
toolkit needs to know about it (title, Hub tag, whether perplexity means something, its options' schema, how it
answers the cloze yardstick) and may own parameters (`module`). It knows nothing about the trainer.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing

import torch

from models import family_names, get_family
from models.errors import UserError

from . import scoring

OBJECTIVES: dict[str, type] = {}
ARCHS = ("encoder", "decoder", "encoder-decoder")


def register(cls):
    """Class decorator: make an Objective subclass buildable by its `name`."""
    OBJECTIVES[cls.name] = cls
    return cls


def objective_class(name: str) -> type:
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective '{name}'; choose one of {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


def build_objective(name: str, tokenizer, model_cfg, documents: bool = False, **options):
    """The objective `name` for `tokenizer` (a PreTrainedTokenizerFast) and `model_cfg`, configured by options;
    `documents`: its batches keep attention inside each packed document (see Objective.documents)."""
    cls = objective_class(name)
    if not documents:  # an objective that knows nothing of documents need not take the argument
        return cls(tokenizer, model_cfg, cls.parse_options(options))
    if not cls.document_aware:
        raise UserError(f"objective '{name}' cannot keep attention inside documents; set "
                        f"objective.document_masking false")
    return cls(tokenizer, model_cfg, cls.parse_options(options), documents=True)


@dataclasses.dataclass
class NoOptions:
    def check(self):
        pass


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _fits(value, hint) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_name(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


class Objective:
    """Base class: subclasses set the class attributes below and implement `collate` and `loss`.

    Class attributes are known before any tokenizer or model exists: the tokenizer builder reserves
    `special_tokens`, the config check validates `Options` and `archs`, model cards read `title` and `hub_tag`.
    """

    name: str = ""
    title: str = ""  # for model cards and reports, e.g. "masked language modeling (BERT)"
    hub_tag: str = ""  # a Hub tag, e.g. "masked-lm"
    archs: tuple = ()  # the model shapes it trains
    head_outputs: int = 0  # the model head it trains (ModelConfig.head_outputs): 0 = an LM head; ELECTRA: 1
    special_tokens: tuple = ("pad_token", "eos_token")  # roles, or tokens of its own written "<...>" / "[...]"
    perplexity: bool = False  # the loss is the NLL of text predicted left to right, so exp(loss) means something
    loss_meaning: str = ""  # what its validation loss measures, one sentence for the comparison report
    cloze_overhead: int = 0  # tokens its cloze input adds around a window of text
    cloze_note: str = ""  # how the cloze question relates to what it trains on, for the report (markdown)
    metric_names: tuple = ()  # metrics its loss returns beyond loss / accuracy / n_predicted, also validated
    metric_counts: dict = {}  # metric -> the count in its metrics it is a mean over, beyond metric_weight's names
    Options = NoOptions  # a dataclass of its options with a check() refusing bad values in one line
    document_aware: bool = False  # it takes documents=True: segment ids in its batches, nothing crosses a boundary

    def __init__(self, tokenizer, model_cfg, options=None, documents: bool = False):
        self.check_model(model_cfg)
        self.tokenizer, self.model_cfg = tokenizer, model_cfg
        # documents=True: collate adds segment ids (the document of each position, -1 on padding; encoder-decoders
        # also decoder_segment_ids), so attention never crosses a document boundary and positions restart
        self.documents = documents
        self.options = options if options is not None else self.parse_options({})
        self.vocab_size = len(tokenizer)
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id
        self.mask_id = tokenizer.mask_token_id
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.module: torch.nn.Module | None = None  # parameters of its own (see own_module)
        vocab = tokenizer.get_vocab()
        for role in self.special_tokens:
            if role[0] in "<[" and role not in vocab or role[0] not in "<[" and role != "sentinels" and \
                    getattr(tokenizer, role + "_id", None) is None:
                raise UserError(f"objective '{self.name}' needs the tokenizer's {role}; add it with "
                                f"pretrain.data.tokenizer.ensure_special_tokens(tokenizer, {self.special_tokens})")

    # ---- what the configuration knows before anything is built --------------------------------------------
    @classmethod
    def check_arch(cls, arch: str):
        """Refuse an architecture this objective cannot train, in one line naming what it can train."""
        if arch not in ARCHS:
            raise UserError(f"unknown architecture '{arch}'; choose one of {', '.join(ARCHS)}")
        if arch in cls.archs:
            return
        needs = " or ".join(f"{_article(a)} {a} ({_presets(a, cls.head_outputs)})" for a in cls.archs)
        raise UserError(f"objective '{cls.name}' cannot train {_article(arch)} {arch} model: it needs {needs}; "
                        f"{_alternatives(arch)}")

    @classmethod
    def check_model(cls, model_cfg):
        """check_arch, and refuse a model whose head is not the one this objective trains, in one line naming the
        presets that have it."""
        cls.check_arch(model_cfg.arch)
        if model_cfg.head_outputs == cls.head_outputs:
            return
        heads = {0: "an LM head over the vocabulary"}
        want, have = (heads.get(n, f"a head of {n} logit(s) per token") for n in (cls.head_outputs,
                                                                                   model_cfg.head_outputs))
        presets = [n for n in family_names(model_cfg.arch)
                   if get_family(n).preset.get("head_outputs", 0) == cls.head_outputs]
        others = sorted(n for n, c in OBJECTIVES.items() if c.head_outputs == model_cfg.head_outputs
                        and model_cfg.arch in c.archs)
        raise UserError(f"objective '{cls.name}' trains {want} but this model has {have}; use "
                        f"{'model.preset ' + '/'.join(presets) if presets else 'another model'} for it, or objective "
                        f"{'/'.join(others) or 'none'} for this model")

    @classmethod
    def parse_options(cls, values: dict):
        """Options from a plain mapping: unknown names, wrong types and out-of-range values refused in one line."""
        fields = {f.name: f for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise UserError(f"objective '{cls.name}' has no option {', '.join(map(repr, unknown))}; "
                            f"its options are {', '.join(fields) or 'none'}")
        hints = typing.get_type_hints(cls.Options)
        for key, value in values.items():
            if not _fits(value, hints[key]):
                raise UserError(f"objective '{cls.name}': option {key}={value!r} must be {_type_name(hints[key])}")
        options = cls.Options(**{k: float(v) if hints[k] is float else v for k, v in values.items()})
        options.check()
        return options

    # ---- the interface ----------------------------------------------------------------------------------------
    def block_length(self, seq_len: int) -> int:
        """Raw corpus tokens one example consumes for a model of sequence length `seq_len`."""
        return seq_len

    def collate(self, blocks, generator: torch.Generator) -> dict:
        raise NotImplementedError

    def loss(self, model, batch: dict):
        """(loss, metrics) with metrics "loss", "accuracy" and "n_predicted" as 0-dim tensors, and optionally the
        same for parts of the examples as "P_loss", "P_accuracy", "P_n_predicted" (see metric_weight). `model` is
        what the trainer hands over (calling it runs the forward; its attributes are the Transformer's)."""
        raise NotImplementedError

    def validation_variants(self) -> dict:
        """name -> another objective whose validation loss is logged beside this one's as name_loss (FIM: the
        left-to-right loss on untransformed text); none by default."""
        return {}

    def own_flops(self, batch: dict) -> float:
        """Training FLOPs of its own parameters for one micro-batch (ELECTRA's generator), beside the model's that
        the trainer counts; from shapes only (no device synchronization). None by default."""
        return 0.0

    def head_predictions(self, batch: dict) -> int:
        """Positions the model's head predicts in one micro-batch: what the loss reports as n_predicted, known
        before the forward so a FLOPs budget can be planned; by default the labels other than -100."""
        return int((batch["labels"] != -100).sum())

    def exports(self, model) -> dict:
        """Extra transformers models built from its own parameters (and the model's), written beside the exported
        model as name/ folders (ELECTRA: its generator as ElectraForMaskedLM); none by default."""
        return {}

    def own_module(self, model):
        """The objective's own parameters as this call should use them: the trainer optimizes, checkpoints and
        resumes `self.module` with the model, and hands the version it prepared (DDP-wrapped when data parallel)
        over as `model.own`; called on a bare Transformer, this is `self.module`."""
        own = getattr(model, "own", None)
        return own if own is not None else self.module

    # ---- the cloze yardstick: hide one whole word and score it ------------------------------------------------
    @property
    def cloze_method(self) -> str:
        """How it asks the cloze question, for the report (markdown: token names in backticks)."""
        return {"encoder": "`[MASK]` at the position", "decoder": "next-token prediction",
                "encoder-decoder": "prefix LM, first decoder token"}[self.model_cfg.arch]

    def cloze_batch(self, windows: list[list[int]], positions: list[int], variant: str):
        """(model inputs, index) such that model(**inputs)[i, index[i]] predicts windows[i][positions[i]].
        variant "both": all the context the model can use; "left": the window cut right after the hidden token.
        The default answers for each shape: an encoder reads the mask token at the position, a decoder predicts
        the next token from the left context, an encoder-decoder reads the left context and predicts the first
        decoder token."""
        arch = self.model_cfg.arch
        if arch == "decoder":
            ids, _ = pad_rows([r[:p] for r, p in zip(windows, positions)], self.pad_id)  # right padding: unseen
            return {"input_ids": ids}, torch.tensor(positions) - 1
        if arch == "encoder":
            rows = [r[:p] + [self.mask_id] + r[p + 1:] for r, p in zip(cut(windows, positions, variant), positions)]
            ids, mask = pad_rows(rows, self.pad_id)
            return {"input_ids": ids, "attention_mask": mask}, torch.tensor(positions)
        return self.seq2seq_cloze([r[:p] for r, p in zip(windows, positions)], [[self.decoder_start_id]] * len(
            positions), [0] * len(positions))

    def seq2seq_cloze(self, encoder_rows, decoder_rows, index):
        enc, mask = pad_rows(encoder_rows, self.pad_id)
        dec, _ = pad_rows(decoder_rows, self.pad_id)  # right padding of a causal decoder: invisible to the index
        return {"input_ids": enc, "attention_mask": mask, "decoder_input_ids": dec}, torch.tensor(index)

    @torch.no_grad()
    def cloze_logits(self, model, windows: list[list[int]], positions: list[int], variant: str) -> torch.Tensor:
        """[n, vocab] logits of the hidden tokens (override to answer through parameters of one's own)."""
        batch, index = self.cloze_batch(windows, positions, variant)
        device = next(model.parameters()).device
        hidden = model(**{k: v.to(device) if v is not None else None for k, v in batch.items()})
        return model.logits(hidden[torch.arange(len(positions), device=device), index.to(device)])

    # ---- zero-shot scoring of a sentence (pretrain score, minimal pairs): see objectives/scoring.py ------------
    def score_method(self, variant: str = "word") -> str:
        """How it scores a sentence, printed beside every result."""
        hole = "the token and the rest of its word" if variant == "word" else "the token alone"
        return {"decoder": "sum of token log-probabilities after EOS (the token before every document)",
                "encoder": f"pseudo-log-likelihood, `[MASK]` over {hole}",
                "encoder-decoder": "prefix LM: the first token as prefix, the decoder scores the rest"
                }[self.model_cfg.arch]

    def score_rows(self, ids: list[int], starts: list[bool], variant: str = "word") -> list:
        """The ScoreRows whose summed log-probabilities score the sentence `ids` (its text's tokens, no specials;
        starts: does each begin a word). The default per shape: a decoder reads EOS then the sentence (documents
        are joined by EOS), an encoder answers a mask over each token in turn (followed by EOS, the document's
        end), an encoder-decoder as a prefix LM."""
        arch = self.model_cfg.arch
        if arch == "decoder":
            return scoring.causal_rows(ids, self.eos_id)
        if arch == "encoder":
            return scoring.pll_rows(ids, starts, self.mask_id, variant, suffix=[self.eos_id])
        return scoring.prefix_rows(ids, self.decoder_start_id)

    @torch.no_grad()
    def score_logits(self, model, batch: dict, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[n, vocab] logits at (rows[k], positions[k]) of the padded batch (override to answer through parameters
        of one's own, as ELECTRA's generator does)."""
        return model.logits(model(**batch)[rows, positions])

    # ---- helpers for subclasses ----------------------------------------------------------------------------
    @property
    def decoder_start_id(self) -> int:
        """The model config's decoder start token (what transformers' generate reads too); the objective's own
        convention when the config names none."""
        start = self.model_cfg.decoder_start_token_id
        return start if start is not None else self.conventional_decoder_start()

    def conventional_decoder_start(self) -> int:
        return self.pad_id  # T5's convention

    def real_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool [B, L]: not padding. Packing pads the corpus's last block (data.tail pad) at its end with the pad
        token, which must never be a target nor attended to; text never holds the pad token (packing reads special
        tokens' text as plain text). A tokenizer whose pad is its eos cannot tell them apart: nothing is padding."""
        if self.pad_id is None or self.pad_id == self.eos_id:
            return torch.ones_like(ids, dtype=torch.bool)
        trailing = (ids == self.pad_id).flip(1).cumprod(dim=1).flip(1)  # pads from some position to the end
        return ~trailing.bool()

    def document_ids(self, ids: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """Long [B, L]: the document of each position of packed rows, counted from 0 in each row; a document ends
        with its EOS (packing writes one after every document); -1 on padding."""
        real = self.real_tokens(ids) if real is None else real
        eos = (ids == self.eos_id) & real
        return (eos.cumsum(dim=1) - eos.long()).masked_fill(~real, -1)

    def documents_of(self, row: torch.Tensor) -> list[tuple[int, int, bool]]:
        """(start, end, ends with EOS) of each document in a row of real tokens (no padding), in order."""
        ends = ((row == self.eos_id).nonzero().squeeze(1) + 1).tolist()
        if not ends or ends[-1] != len(row):
            ends.append(len(row))
        starts = [0] + ends[:-1]
        return [(a, b, bool(row[b - 1] == self.eos_id)) for a, b in zip(starts, ends) if b > a]

    def pack_examples(self, rows: list, encoder_width: int, decoder_width: int | None = None) -> dict:
        """The batch of an encoder-decoder objective with documents: rows[r] lists (encoder tokens, target tokens)
        of each document of row r, in order. Document k is segment k on both sides (-1 on padding); the decoder
        reads each target behind its own decoder start token (t5x's per-segment shift); the decoder side is as wide
        as the longest row's targets unless decoder_width says."""
        if decoder_width is None:
            decoder_width = max([sum(len(t) for _, t in examples) for examples in rows] + [1])
        batch = len(rows)
        inputs, segments = torch.full((batch, encoder_width), self.pad_id), torch.full((batch, encoder_width), -1)
        labels, decoder_segments = torch.full((batch, decoder_width), -100), torch.full((batch, decoder_width), -1)
        previous = torch.full((batch, decoder_width), self.pad_id)
        for r, examples in enumerate(rows):
            e = d = 0
            for doc, (source, target) in enumerate(examples):
                inputs[r, e:e + len(source)], segments[r, e:e + len(source)] = source, doc
                labels[r, d:d + len(target)], decoder_segments[r, d:d + len(target)] = target, doc
                previous[r, d], previous[r, d + 1:d + len(target)] = self.decoder_start_id, target[:-1]
                e, d = e + len(source), d + len(target)
        return with_padding({"input_ids": inputs, "decoder_input_ids": previous, "labels": labels,
                             "segment_ids": segments, "decoder_segment_ids": decoder_segments},
                            "attention_mask", segments >= 0)

    def _non_special_ids(self) -> torch.Tensor:
        """Vocabulary ids that may be drawn as random replacements: everything except special tokens."""
        if not hasattr(self, "_random_pool"):
            keep = torch.ones(self.vocab_size, dtype=torch.bool)
            keep[self.special_ids[self.special_ids < self.vocab_size]] = False
            self._random_pool = keep.nonzero().squeeze(1)
        return self._random_pool

    def _random_tokens(self, shape, generator) -> torch.Tensor:
        pool = self._non_special_ids()
        return pool[torch.randint(len(pool), shape, generator=generator)]


def _presets(arch: str, head_outputs: int = 0) -> str:
    """The presets of `arch` whose head an objective training `head_outputs` logits per position can train."""
    names = [n for n in family_names(arch) if get_family(n).preset.get("head_outputs", 0) == head_outputs]
    return f"preset{'s' if len(names) != 1 else ''} {', '.join(names) or 'none registered'}"


def _alternatives(arch: str) -> str:
    """What trains this architecture instead: the families' default objectives, then any other that can."""
    by_objective: dict[str, list[str]] = {}
    for name in family_names(arch):
        default = get_family(name).default_objective
        if default:
            by_objective.setdefault(default, []).append(name)
    hints = [f"{objective} for {'/'.join(names)}" for objective, names in by_objective.items()]
    others = sorted(n for n, cls in OBJECTIVES.items() if arch in cls.archs and n not in by_objective)
    text = "use " + ", ".join(hints) if hints else ""
    if others:
        text += (", or " if text else "use ") + ", ".join(others)
    return text or f"no registered objective trains {_article(arch)} {arch}"


def perplexity(loss: float) -> float:
    """exp(loss), capped where it stops meaning anything (the one perplexity formula)."""
    return math.exp(min(loss, 50.0))


def as_blocks(blocks) -> torch.Tensor:
    """LongTensor [B, L] from a tensor, a list of equal-length lists, or a list of 1-D tensors."""
    if isinstance(blocks, torch.Tensor):
        out = blocks
    elif len(blocks) and isinstance(blocks[0], torch.Tensor):
        out = torch.stack(list(blocks))
    else:
        out = torch.as_tensor(blocks)
    if out.dim() != 2:
        raise ValueError(f"collate expects blocks of shape [batch, block_length], got {tuple(out.shape)}")
    return out.long()


def with_padding(batch: dict, key: str, mask: torch.Tensor) -> dict:
    """batch plus `key` = mask (1 = token, 0 = padding) only when something is padded: an absent mask tells the
    model there is none, so it takes the no-mask attention path without asking the device."""
    if not bool(mask.all()):
        batch[key] = mask.long()
    return batch


def model_inputs(batch: dict, *keys: str) -> dict:
    """The batch's entries the model reads (`keys`), without those the batch does not have."""
    return {k: batch[k] for k in keys if batch.get(k) is not None}


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Right-padded LongTensor of the rows and its attention mask (None when every row has the same length)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, None if bool(mask.all()) else mask


def cut(windows: list[list[int]], positions: list[int], variant: str) -> list[list[int]]:
    """The cloze windows as a variant sees them: whole ("both") or cut right after the hidden token ("left")."""
    return [r[: p + 1] if variant == "left" else r for r, p in zip(windows, positions)]


def predict(model, hidden: torch.Tensor, labels: torch.Tensor):
    """Cross-entropy of the LM head on `hidden` [..., d] against `labels` [...] (-100 ignored), through the model's
    fused `lm_loss` (no full logits). Returns (loss, metrics)."""
    n = (labels != -100).sum()
    loss, correct = model.lm_loss(hidden, labels)
    metrics = {"loss": loss.detach().float(),
               "accuracy": (correct.float() / n.clamp(min=1)).detach(),
               "n_predicted": n.detach().float()}
    return loss, metrics


def metric_weight(key: str, metrics, declared: dict | None = None) -> str | None:
    """The count a metric of `metrics` is a mean over, when it is one: what the objective declares
    (`declared`: its metric_counts, e.g. ELECTRA's disc_auc over disc_pairs), else "loss" and "accuracy" over
    "n_predicted", and "P_loss" / "P_accuracy" over "P_n_predicted" where the objective reports that count (a part
    of its examples, e.g. UL2's r_loss). Such a metric is averaged over micro-batches, processes and validation
    batches weighted by its count and left out where the count is zero; the counts are summed
    (pretrain/train/aggregate.py). An objective returns the same keys from every call, so processes reduce the same
    metrics."""
    if declared and key in declared:
        candidate = declared[key]
    elif key in ("loss", "accuracy"):
        candidate = "n_predicted"
    elif key.endswith(("_loss", "_accuracy")):
        candidate = key.rsplit("_", 1)[0] + "_n_predicted"
    else:
        return None
    return candidate if candidate in metrics else None


def is_count(key: str) -> bool:
    """Whether a metric is a count of predicted tokens (summed, not averaged)."""
    return key == "n_predicted" or key.endswith("_n_predicted")


def check_fraction(objective: str, option: str, value: float, allow_zero: bool = True, allow_one: bool = False):
    """Options that are probabilities or ratios: refuse a value outside the range in one line."""
    low_ok = value >= 0 if allow_zero else value > 0
    high_ok = value <= 1 if allow_one else value < 1
    if not (low_ok and high_ok):
        interval = f"{'[' if allow_zero else '('}0, 1{']' if allow_one else ')'}"
        raise UserError(f"objective '{objective}': {option}={value} must be in {interval}")


def check_replacement(objective: str, mask_replace: float, random_replace: float):
    """BERT's 80/10/10 split of the selected tokens (mask token / random token / unchanged): each share and their
    sum in [0, 1]."""
    check_fraction(objective, "mask_replace", mask_replace, allow_one=True)
    check_fraction(objective, "random_replace", random_replace, allow_one=True)
    check_fraction(objective, "mask_replace + random_replace", mask_replace + random_replace, allow_one=True)
