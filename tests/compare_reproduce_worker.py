"""One fresh process of tests/test_compare_reproducible.py: the tiny comparison of tests/test_compare.py (encoder,
decoder and encoder-decoder, downstream fine-tuning and probing, zero-shot pairs) with a WordPiece tokenizer, whose
trainer is the one that depended on hash order.

    python tests/compare_reproduce_worker.py WORKDIR
"""
import contextlib
import io
import sys
from pathlib import Path

from test_compare import tiny_defaults
from train_fixtures import write_corpus

from pretrain.compare.runner import compare_main

if __name__ == "__main__":
    work = Path(sys.argv[1])
    corpus = write_corpus(work / "data", n_paragraphs=250)
    defaults = tiny_defaults(work, corpus)
    defaults["tokenizer"] = {"kind": "wordpiece", "vocab_size": 400}
    with contextlib.redirect_stdout(io.StringIO()):
        sys.exit(compare_main([], {**defaults, "samples": False}))
