"""`pretrain prepare`: the tokenizer and the token cache of a corpus, built once before any run.

Takes the config of the runs to come (the data and tokenizer sections, the objective and run.seq_len, which set
the block length). It trains the tokenizer (kept in the cache under a key of the corpus, the tokenizer config, the
objective's special tokens and the seed, where every run of that key picks it up instead of training its own) and
tokenizes both splits into the memory-mapped block cache, so a run started afterwards begins training at once.
"""
from __future__ import annotations

import time

from objectives import objective_class

from ..atomic import atomic_dir
from ..data.corpus import count_documents, describe_corpus, load_corpus, quiet_datasets
from ..data.packing import cache_path
from ..data.tokenizer import ensure_special_tokens, load_tokenizer, prepared_tokenizer_dir, tokenizer_for
from ..errors import ConfigError
from .build import cache_dir, corpus_blocks, run_spec, tokenizer_summary
from .config import load_config


def prepare_main(argv: list[str], defaults: dict | None = None, prog: str = "pretrain prepare") -> int:
    """defaults: a recipe's (`python recipes/bert_mlm.py prepare ...` prepares for that recipe)."""
    cfg = load_config(argv, defaults, prog)
    if cfg.data.streaming:
        raise ConfigError("pretrain prepare builds the token cache of a corpus read in full, and data.streaming "
                          "reads it lazily at every run; drop data.streaming (or do not prepare)")
    roles = objective_class(cfg.objective.name).special_tokens
    with quiet_datasets():
        texts = load_corpus(cfg.data)
        print(f"corpus: {describe_corpus(cfg.data)}: {count_documents(texts[0])} training / "
              f"{count_documents(texts[1])} validation documents", flush=True)
        where = prepared_tokenizer_dir(cache_dir(cfg), cfg.tokenizer, texts[0], roles, cfg.data.seed)
        if where is None:
            tokenizer = tokenizer_for(cfg.tokenizer, None, roles)
            print(tokenizer_summary(cfg, tokenizer), flush=True)
        elif where.is_dir():
            tokenizer = load_tokenizer(str(where))
            print(f"tokenizer: already prepared in {where}", flush=True)
        else:
            tokenizer = tokenizer_for(cfg.tokenizer, texts[0], roles, seed=cfg.data.seed)
            with atomic_dir(where, if_exists="keep") as tmp:
                tokenizer.save_pretrained(str(tmp))
            print(f"{tokenizer_summary(cfg, tokenizer)}; saved in {where}", flush=True)
        tokenizer = ensure_special_tokens(tokenizer, roles)
        spec = run_spec(cfg, tokenizer)
        cached = cache_path(texts[0], tokenizer, spec.block_length, cache_dir(cfg), cfg.data.tail).is_dir()
        began = time.perf_counter()
        train, val = corpus_blocks(cfg, tokenizer, spec.block_length, texts)
        seconds = time.perf_counter() - began
    tokens = train.token_count + val.token_count
    speed = "already prepared" if cached else \
        f"tokenized in {seconds:.1f} s, {tokens / max(seconds, 1e-9):,.0f} tokens/s"
    print(f"prepared: {len(train):,} training / {len(val):,} validation blocks of {spec.block_length} tokens "
          f"({tokens:,} tokens; {speed}) in {train.directory}", flush=True)
    return 0
