"""The model being evaluated, as transformers' own sequence classifier.

    backbone = open_backbone("runs/bert_mlm", workdir)        # a run (exported into workdir first) or an HF folder
    model = classifier(backbone, num_labels, pretrained=True)  # AutoModelForSequenceClassification
    model = classifier(backbone, num_labels, pretrained=False, seed=1)   # the random-init baseline
    batches = encode(backbone, texts, pairs, max_length)       # token ids, then pad(...) per batch
    features = pooled_features(backbone, model, batch)         # [B, d]: what the classification head reads
    model = classifier(backbone, num_labels, pooling="encoder")  # encoder-decoders: the encoder's mean state

A run is exported exactly as `pretrain export` does and the exported folder is loaded with
`AutoModelForSequenceClassification`: what a user does next with the model, and a check on the export. Each class
pools as its architecture does: BERT the [CLS] position (through its pooler), GPT-2 / Llama the last non-padding
token, BART / T5 the decoder state at the final </s>. The probe's features are that same position's last hidden
state. pooling="encoder" (encoder-decoders) is the other reading: a linear head on the mean of the encoder's final
states (pretrain/evaluate/encoder_pooled.py). A model without a transformers class (the generic `transformer`
preset) is refused by the export, naming why.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..export.to_hf import export_run
from ..train.run_dir import RunDir

ARCH_OF_HEAD = {"ForMaskedLM": "encoder", "ForPreTraining": "encoder", "LMHeadModel": "decoder",
                "ForCausalLM": "decoder"}


@dataclass
class Backbone:
    folder: Path  # a transformers folder: config.json, model.safetensors, tokenizer
    source: Path  # what the user named (a run or a folder)
    description: str  # e.g. "runs/bert_mlm (final, step 600) exported as BertForMaskedLM"
    arch: str  # encoder | decoder | encoder-decoder
    model_type: str
    tokenizer: object
    max_length: int | None  # the model's positions (None: relative positions, no limit)


@contextlib.contextmanager
def quiet_transformers():
    """No 'newly initialized weights' / 'you should train this model' chatter (the head is new on purpose) and no
    'Loading weights' bar between the results."""
    from transformers.utils import logging

    before, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(before)
        if bars:
            logging.enable_progress_bar()


def is_run(path: Path) -> bool:
    run = RunDir(path)
    return run.config.is_file() or run.finished()


def open_backbone(path, workdir: Path, checkpoint: str | None = None) -> Backbone:
    """A run (exported into workdir/model) or an exported transformers folder, checked to load as a classifier."""
    from transformers import AutoConfig, AutoTokenizer

    source = Path(path)
    if not source.is_dir():
        raise UserError(f"{source} does not exist or is not a folder; pass a run directory or an exported model "
                        f"folder (pretrain export RUN --out DIR)")
    if is_run(source):
        with quiet_transformers():  # no "Writing model shards" bar
            folder = export_run(source, Path(workdir) / "model", checkpoint, log=lambda m: None)
        description = f"{source} ({checkpoint or 'final'}), exported as pretrain export does"
    elif (source / "config.json").is_file():
        if checkpoint:
            raise UserError(f"--checkpoint applies to run directories; {source} is an exported folder")
        folder, description = source, f"{source} (exported transformers folder)"
    else:
        raise UserError(f"{source} is neither a run directory (no config.yaml / final/) nor a transformers folder "
                        f"(no config.json); pass one of them")
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(folder))
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:
        raise UserError(f"cannot load {folder} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); pass a run "
                        f"or a folder written by pretrain export") from None
    arch = _arch(config)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise UserError(f"the tokenizer in {folder} has neither a pad nor an eos token, so batches cannot be "
                            f"padded; add a pad token to it")
        tokenizer.pad_token = tokenizer.eos_token
    positions = getattr(config, "max_position_embeddings", None) if config.model_type != "t5" else None
    return Backbone(folder, source, description, arch, config.model_type, tokenizer, positions)


def _arch(config) -> str:
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    for suffix, arch in ARCH_OF_HEAD.items():
        if any(name.endswith(suffix) for name in (config.architectures or [])):
            return arch
    raise UserError(f"cannot tell whether {config.model_type} (architectures {config.architectures}) is an encoder "
                    f"or a decoder; export the model with pretrain export")


POOLINGS = ("native", "encoder")  # transformers' own classifier's pooling; an encoder-decoder's encoder, mean-pooled


def classifier(backbone: Backbone, num_labels: int, pretrained: bool = True, seed: int = 0, pooling: str = "native"):
    """transformers' sequence classifier: pretrained weights + a new head, or all weights freshly initialized with
    `seed` (the random-init baseline: same architecture and size). fp32, train mode. pooling="encoder": the
    encoder-decoder's encoder with a linear head on its mean-pooled final states instead."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if pooling == "encoder":
        from .encoder_pooled import encoder_classifier

        with quiet_transformers():
            return encoder_classifier(backbone, num_labels, pretrained, seed)
    torch.manual_seed(seed)  # the new head (and for the baseline every weight) is drawn from this seed
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(backbone.folder), num_labels=num_labels)
            config.pad_token_id = backbone.tokenizer.pad_token_id
            if pretrained:
                model = AutoModelForSequenceClassification.from_pretrained(str(backbone.folder), config=config,
                                                                           dtype=torch.float32)
            else:
                model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    except ValueError as e:
        raise UserError(f"transformers has no sequence classifier for {backbone.model_type} "
                        f"({str(e).splitlines()[0][:120]}); fine-tune a bert, gpt2, llama, bart or t5 model") \
            from None
    model.train()
    return model


# ---- inputs -------------------------------------------------------------------------------------------------------
def max_length_for(backbone: Backbone, wanted: int) -> int:
    return min(wanted, backbone.max_length) if backbone.max_length else wanted


def encode(backbone: Backbone, texts: list[str], pairs: list[str] | None, max_length: int) -> list[list[int]]:
    """Token ids with the tokenizer's own framing ([CLS] A [SEP] B [SEP], <s> A </s></s> B </s>, A </s> B </s>),
    truncated to max_length."""
    tok = backbone.tokenizer
    enc = tok(texts, pairs, truncation=True, max_length=max_length_for(backbone, max_length))
    return enc["input_ids"]


def pad(backbone: Backbone, rows: list[list[int]]) -> dict:
    """Right-padded input_ids and attention_mask for one batch."""
    width = max(len(r) for r in rows)
    pad_id = backbone.tokenizer.pad_token_id
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def pooled_features(backbone: Backbone, model, batch: dict) -> torch.Tensor:
    """The last hidden state at the position the classifier pools ([CLS], last real token, final </s>; the
    encoder's mean state for an encoder-pooled classifier)."""
    if hasattr(model, "features"):  # EncoderPooledClassifier
        return model.features(**batch)
    out = model(**batch, output_hidden_states=True)
    rows = torch.arange(batch["input_ids"].shape[0])
    if backbone.arch == "encoder":
        return out.hidden_states[-1][:, 0]
    if backbone.arch == "decoder":
        return out.hidden_states[-1][rows, batch["attention_mask"].sum(1) - 1]
    eos = batch["input_ids"].eq(backbone.tokenizer.eos_token_id)
    positions = torch.arange(eos.shape[1]).expand_as(eos).masked_fill(~eos, -1).amax(1)
    if (positions < 0).any():
        raise UserError("an example has no </s> token after truncation; the encoder-decoder classifier needs one")
    return out.decoder_hidden_states[-1][rows, positions]
