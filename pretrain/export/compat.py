"""The files of an export as every consumer reads them: the tokenizer encodes a text as the family's own
transformers tokenizer does, and config.json / tokenizer_config.json mean the same to transformers 4.x and 5.x.

transformers 5 writes `tokenizer_class: TokenizersBackend` and a list under `extra_special_tokens` (4.x has neither
that class nor that list form), records T5's untied head as `scale_decoder_outputs: false` beside
`tie_word_embeddings: true` (4.x then ties the head and rescales), and Llama's rope_theta under `rope_parameters`
(4.x takes its default). Every such field is written here in the form both read, from what the weights are.
`benchmarks/export_compat.py` loads every family's export with both and compares logits; VERIFIED_WITH are the
versions it passed with (the model card names them).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from tokenizers import pre_tokenizers, processors

from models import get_family

VERIFIED_WITH = ("4.57.6", "5.25.0")  # transformers versions benchmarks/export_compat.py loaded every family with
TOKENIZER_CLASS = "PreTrainedTokenizerFast"  # reads tokenizer.json as it is, in 4.x and 5.x alike
ROLE_TOKENS = {"bos": ("bos_token",), "eos": ("eos_token",), "cls": ("cls_token", "bos_token"),
               "sep": ("sep_token", "eos_token")}


# ---- the tokenizer ---------------------------------------------------------------------------------------------
def _role_token(tokenizer, role: str) -> str | None:
    for name in ROLE_TOKENS[role]:
        token = getattr(tokenizer, name, None)
        if token is not None:
            return str(token)
    return None


def _fill(template: str, tokenizer, used: dict) -> str:
    """A template over {role} names -> one over the tokenizer's tokens; a role it lacks adds nothing."""
    words = []
    for word in template.split():
        head, _, seq = word.partition(":")
        if head.startswith("{") and head.endswith("}"):
            token = _role_token(tokenizer, head[1:-1])
            if token is None:
                continue
            used[token] = tokenizer.convert_tokens_to_ids(token)
            word = token + (f":{seq}" if seq else "")
        words.append(word)
    return " ".join(words)


def family_post_processor(tokenizer, family: str):
    """The post-processor that adds what the family's own tokenizer adds around a text (byte-level BPE keeps its
    offset processor in front, as GPT2TokenizerFast has it)."""
    single, pair = get_family(family).text_template
    used: dict = {}
    template = processors.TemplateProcessing(single=_fill(single, tokenizer, used), pair=_fill(pair, tokenizer, used),
                                             special_tokens=list(used.items()))
    if isinstance(tokenizer.backend_tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel):
        return processors.Sequence([processors.ByteLevel(trim_offsets=False), template])
    return template


def family_tokenizer(tokenizer, family: str, token_types: bool):
    """A copy of the run's tokenizer that encodes a text as the family does: training is untouched (packing adds
    EOS between documents itself and never asks the post-processor). Without `token_types` (a model with no
    token-type embedding) it returns no token_type_ids: 4.x's generate refuses an input the model does not take."""
    exported = copy.deepcopy(tokenizer)
    exported.backend_tokenizer.post_processor = family_post_processor(exported, family)
    exported.model_input_names = ["input_ids", *(["token_type_ids"] if token_types else []), "attention_mask"]
    return exported


def save_tokenizer(tokenizer, folder) -> None:
    """save_pretrained, then tokenizer_config.json in the form transformers 4.x and 5.x both load."""
    tokenizer.save_pretrained(str(folder))
    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = TOKENIZER_CLASS
    config["model_input_names"] = list(tokenizer.model_input_names)
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list):  # 4.x: a dict of named extras; the list is its additional_special_tokens
        config["additional_special_tokens"] = extra
    elif extra:
        config["extra_special_tokens"] = extra
    for key in ("backend", "is_local", "local_files_only"):  # how 5.x loaded it here, not what the tokenizer is
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


# ---- the model's config.json ---------------------------------------------------------------------------------------
def head_is_tied(hf_model) -> bool | None:
    """Whether the exported LM head is the input embedding (None: the model has no LM head)."""
    head = hf_model.get_output_embeddings()
    if head is None:
        return None
    return head.weight.data_ptr() == hf_model.get_input_embeddings().weight.data_ptr()


def save_model(hf_model, folder, family: str | None = None, model_cfg=None) -> None:
    """save_pretrained, then config.json saying what the weights are (tie_word_embeddings from the head itself)
    plus the fields 4.x reads where 5.x renamed them (the family's legacy_config of model_cfg)."""
    hf_model.save_pretrained(str(folder))
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    tied = head_is_tied(hf_model)
    if tied is not None:
        config["tie_word_embeddings"] = tied
    if family is not None:
        config.update(get_family(family).legacy_config(model_cfg))
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
