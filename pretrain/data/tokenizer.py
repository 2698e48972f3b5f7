"""Tokenizers: train one with `tokenizers` or load one, always as a `transformers.PreTrainedTokenizerFast`.

    tokenizer_for(tok_cfg, texts, roles=(), seed=0, progress=True) -> tokenizer
        texts: a datasets.Dataset / IterableDataset with a "text" column or a list of strings (the training
        split). With tok_cfg.path set, it loads instead.
    load_tokenizer(path_or_hub_id) -> tokenizer         (pad and eos filled in, with a warning, when missing)
    ensure_special_tokens(tokenizer, roles) -> tokenizer (adds missing roles in place, with a warning)
    tokenizer_fingerprint(tokenizer) -> str             (hash of tokenizer.json: keys the packed-block cache)

`roles` are the union of the objectives' `special_tokens` role names: "pad_token", "eos_token", "bos_token",
"mask_token", "sentinels" (= <extra_id_0> ... <extra_id_99>, appended at the end of the vocabulary as T5 does),
or literal tokens an objective needs, written "<...>" or "[...]" (FIM's <fim_prefix>, ...: appended likewise).
Every tokenizer has pad and eos: eos is the document separator packing uses.

Kinds and their reserved tokens (ids in this order from 0) and post-processor template:
    wordpiece  [PAD] [UNK] [CLS] [SEP] [MASK]   [CLS] A [SEP]   (BERT; bos=cls=[CLS], eos=sep=[SEP])
    bpe        <s> <pad> </s> <unk> <mask>      <s> A </s>      (byte-level, GPT-2/BART; bos=cls=<s>, eos=sep=</s>)
    unigram    <pad> </s> <unk>                 A </s>          (T5; Metaspace "▁" pieces)
    char       <s> <pad> </s> <unk> <mask>      <s> A </s>      (one token per character, for tiny experiments)
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import datasets
import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ..errors import UserError
from .canonical_vocab import rescored_unigram, without_added_tokens, wordpiece_symbols
from .mapped_pages import corpus_files, releasing

N_SENTINELS = 100
SENTINELS = tuple(f"<extra_id_{i}>" for i in range(N_SENTINELS))
ROLES = ("pad_token", "eos_token", "bos_token", "mask_token", "sentinels")
BRACKET = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[CLS]", "cls_token": "[CLS]",
           "eos_token": "[SEP]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
ANGLE = {"bos_token": "<s>", "cls_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "sep_token": "</s>",
         "unk_token": "<unk>", "mask_token": "<mask>"}
STANDARD = {  # kind -> (reserved tokens in id order, role -> token)
    "wordpiece": (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], BRACKET),
    "bpe": (["<s>", "<pad>", "</s>", "<unk>", "<mask>"], ANGLE),
    "unigram": (["<pad>", "</s>", "<unk>"], {k: ANGLE[k] for k in ("pad_token", "eos_token", "unk_token")}),
    "char": (["<s>", "<pad>", "</s>", "<unk>", "<mask>"], ANGLE),
}


@dataclass
class TokenizerConfig:
    """Which tokenizer to train (kind, vocab_size) or load (path: a directory or Hub id)."""
    kind: Literal["wordpiece", "bpe", "unigram", "char"] = "wordpiece"
    vocab_size: int = 8000  # before the 100 sentinels span corruption appends; for "char": the most characters
    path: Optional[str] = None  # load this tokenizer instead of training one
    max_documents: Optional[int] = 1_000_000  # train on a seeded sample of this many documents (None: all)


# ---- special tokens -------------------------------------------------------------------------------------------
def _style(tokenizer) -> dict:
    """Default token strings for missing roles, in the tokenizer's own style ([SEP] vs </s>)."""
    vocab = tokenizer.get_vocab()
    return BRACKET if "[SEP]" in vocab or "[UNK]" in vocab else ANGLE


def _fill_roles(tokenizer, roles, warn: bool):
    """Set every missing role (using an existing token when there is one) and add missing sentinels."""
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise UserError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} is not a fast tokenizer, so special "
                        f"tokens {tuple(roles)} cannot be added; use one with a tokenizer.json")
    wanted = [r for r in ROLES if r in set(roles) | {"pad_token", "eos_token"}]
    literals = literal_tokens(roles)
    unknown = set(roles) - set(ROLES) - set(literals)
    if unknown:
        raise UserError(f"unknown special-token role(s) {sorted(unknown)}; use some of {', '.join(ROLES)}")
    style, vocab = _style(tokenizer), tokenizer.get_vocab()
    fallback = {"eos_token": "sep_token", "bos_token": "cls_token"}
    for role in wanted:
        if role == "sentinels" or getattr(tokenizer, role, None) is not None:
            continue
        token = getattr(tokenizer, fallback.get(role, role), None) or style[role]
        existed = token in vocab
        tokenizer.add_special_tokens({role: token})
        if warn:
            how = "using its existing token" if existed else "added the new token"
            warnings.warn(f"tokenizer had no {role}; {how} {token!r} (id {tokenizer.convert_tokens_to_ids(token)})",
                          stacklevel=3)
    missing = [t for t in literals if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        if warn:
            warnings.warn(f"tokenizer had no {', '.join(missing)}; added at the end of the vocabulary", stacklevel=3)
    if "sentinels" in wanted:
        missing = [s for s in SENTINELS if s not in vocab]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
            if warn and len(missing) < N_SENTINELS:
                warnings.warn(f"tokenizer lacked {len(missing)} of the sentinels <extra_id_0..99>; added them",
                              stacklevel=3)
            elif warn:
                warnings.warn("tokenizer had no sentinels; added <extra_id_0> ... <extra_id_99> at the end of the "
                              "vocabulary", stacklevel=3)
    return tokenizer


def literal_tokens(roles) -> list[str]:
    """The roles that are tokens themselves ("<fim_prefix>", "[NLU]"), in order."""
    return [r for r in roles if len(r) > 2 and (r[0], r[-1]) in (("<", ">"), ("[", "]"))]


def ensure_special_tokens(tokenizer, roles):
    """Add (in place) any special-token role in `roles` the tokenizer lacks, warning about each; returns it."""
    return _fill_roles(tokenizer, roles, warn=True)


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the full tokenizer.json (vocabulary, merges, normalizer, added tokens)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


# ---- loading --------------------------------------------------------------------------------------------------
def load_tokenizer(path: str):
    """A saved tokenizer directory or a Hub id, as a fast tokenizer with pad and eos set."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # OSError, ValueError, offline errors... all mean "not loadable from here"
        offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
        hint = " (HF_HUB_OFFLINE is set: only local folders and cached ids load)" if offline else ""
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(f"tokenizer.path {path!r}: cannot load a tokenizer ({first}){hint}; give a folder with "
                        f"tokenizer.json or a Hub id, or remove tokenizer.path to train one") from None
    return ensure_special_tokens(tokenizer, ("pad_token", "eos_token"))


# ---- training -------------------------------------------------------------------------------------------------
def _sample_texts(texts, max_documents: Optional[int], seed: int):
    """(batch iterator of strings, number of documents) for the trainer."""
    if isinstance(texts, (list, tuple)):
        texts = datasets.Dataset.from_dict({"text": list(texts)})
    if not hasattr(texts, "__len__"):  # an IterableDataset: the first max_documents
        stream = texts.take(max_documents) if max_documents else texts
        return (b["text"] for b in stream.iter(batch_size=1000)), max_documents
    n = len(texts)
    files = corpus_files(texts)  # their pages are given back as the pass goes: memory stays flat
    if not max_documents or n <= max_documents:
        return releasing((b["text"] for b in texts.iter(batch_size=1000)), files), n
    # rows gathered by index, not select(): on a split (an index mapping) select() copies the whole mapping
    sample = sample_indices(n, max_documents, seed)
    batches = (texts[sample[a:a + 1000].tolist()]["text"] for a in range(0, len(sample), 1000))
    return releasing(batches, files), len(sample)


SAMPLE_CHUNK = 1 << 20


def sample_indices(n: int, k: int, seed: int) -> np.ndarray:
    """k of range(n) drawn uniformly without replacement, sorted, in memory O(k) rather than numpy choice's O(n)
    (8 bytes per document of the corpus): chunk by chunk, the count a chunk gets is hypergeometric (what an
    unordered uniform draw of k from n puts there), then that many of the chunk are drawn."""
    rng = np.random.default_rng(seed)
    parts, left = [], k
    for start in range(0, n, SAMPLE_CHUNK):
        size = min(SAMPLE_CHUNK, n - start)
        rest = n - start - size
        take = int(rng.hypergeometric(size, rest, left)) if rest else left
        parts.append(np.sort(rng.choice(size, take, replace=False)) + start)
        left -= take
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def reserved_tokens(kind: str, roles) -> list[str]:
    """The kind's standard tokens plus role tokens it lacks (e.g. <mask> for a Unigram tokenizer under MLM)."""
    tokens, names = STANDARD[kind]
    style = BRACKET if names is BRACKET else ANGLE
    extra = [style[r] for r in roles if r in style and r not in names and style[r] not in tokens]
    return tokens + list(dict.fromkeys(extra))


def _train_backend(kind: str, vocab_size: int, special: list[str], passes, length, progress: bool):
    """The trained `tokenizers.Tokenizer`; passes() gives a fresh iterator of text batches (one pass over the
    training texts). WordPiece and Unigram take an extra pass each to be deterministic (see canonical_vocab)."""
    batches = passes()
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        reserved = [c for c in wordpiece_symbols(batches) if c not in special]
        batches = passes()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special + reserved,
                                            show_progress=progress)
    elif kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=progress,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=special, unk_token="<unk>",
                                          show_progress=progress)
    else:  # char: the most frequent characters, one token each
        counts = Counter()
        for batch in batches:
            for text in batch:
                counts.update(text)
        chars = [c for c, _ in counts.most_common(max(0, vocab_size - len(special))) if c not in special]
        tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(special + chars)}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
        tok.decoder = decoders.Fuse()
        tok.add_special_tokens(special)
        return tok
    tok.train_from_iterator(batches, trainer, length=length)
    if kind == "wordpiece":
        return without_added_tokens(tok, reserved)
    if kind == "unigram":
        return rescored_unigram(tok, passes(), len(special))
    return tok


def _post_processor(kind: str, tok):
    ids = tok.get_vocab()
    if kind == "wordpiece":
        single, pair, used = "[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1", ["[CLS]", "[SEP]"]
    elif kind == "unigram":
        single, pair, used = "$A </s>", "$A </s> $B:1 </s>:1", ["</s>"]
    else:
        single, pair, used = "<s> $A </s>", "<s> $A </s> </s> $B:1 </s>:1", ["<s>", "</s>"]
    template = processors.TemplateProcessing(single=single, pair=pair, special_tokens=[(t, ids[t]) for t in used])
    if kind == "bpe":
        return processors.Sequence([processors.ByteLevel(trim_offsets=False), template])
    return template


def train_tokenizer(kind: str, vocab_size: int, texts, roles=(), max_documents=None, seed: int = 0,
                    progress: bool = True):
    """Train a `kind` tokenizer on `texts` with the standard and role tokens reserved; PreTrainedTokenizerFast."""
    if kind not in STANDARD:
        raise UserError(f"tokenizer.kind {kind!r} is unknown; use one of {', '.join(STANDARD)}")
    special = reserved_tokens(kind, roles)
    least = len(special) + (256 if kind == "bpe" else 1)
    if vocab_size < least:
        raise UserError(f"tokenizer.vocab_size {vocab_size} is too small for a {kind} tokenizer (it needs at "
                        f"least {least}{', 256 of them bytes' if kind == 'bpe' else ''}); raise it")
    if isinstance(texts, (list, tuple)):  # once, not per pass
        texts = datasets.Dataset.from_dict({"text": list(texts)})
    length = _sample_texts(texts, max_documents, seed)[1]
    tok = _train_backend(kind, vocab_size, special, lambda: _sample_texts(texts, max_documents, seed)[0], length,
                         progress)
    if tok.get_vocab_size() <= len(special):
        raise UserError("the tokenizer saw no text to learn from (empty corpus); give data.files with text")
    tok.post_processor = _post_processor(kind, tok)
    _, names = STANDARD[kind]
    style = BRACKET if names is BRACKET else ANGLE
    role_tokens = {r: t for r, t in style.items() if t in special and r in (*names, *roles)}
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, **role_tokens)
    return _fill_roles(wrapped, roles, warn=False)


def tokenizer_for(tok_cfg: TokenizerConfig, texts, roles=(), seed: int = 0, progress: bool = True):
    """Load tok_cfg.path (adding missing roles with a warning) or train one on `texts` (the training split) as
    tok_cfg says, sampling its documents with `seed`. Nothing is written: the caller saves it where it belongs."""
    if tok_cfg.path:
        return ensure_special_tokens(load_tokenizer(tok_cfg.path), roles)
    return train_tokenizer(tok_cfg.kind, tok_cfg.vocab_size, texts, roles, tok_cfg.max_documents, seed,
                           progress=progress)


# ---- prepared once (pretrain prepare) ---------------------------------------------------------------------------
def prepared_tokenizer_dir(cache_dir, tok_cfg: TokenizerConfig, texts, roles, seed: int):
    """Where `pretrain prepare` keeps the tokenizer it trained for this corpus, tokenizer config, special tokens
    and seed (a content key, like the blocks' cache), or None for a corpus without a fingerprint (streamed)."""
    fingerprint = getattr(texts, "_fingerprint", None)
    if fingerprint is None or tok_cfg.path or not hasattr(texts, "__len__"):
        return None
    parts = [fingerprint, len(texts), tok_cfg.kind, tok_cfg.vocab_size, tok_cfg.max_documents, sorted(roles), seed]
    return Path(cache_dir) / f"tokenizer-{hashlib.sha256(repr(parts).encode()).hexdigest()[:24]}"
