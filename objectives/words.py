"""Which tokens begin a word, asked of the tokenizer itself: whole-word masking (MLM), word spans (infilling) and
the cloze yardstick's whole words all use it."""
import torch
from tokenizers import Tokenizer


def word_starts(ids: torch.Tensor, starts_word: torch.Tensor, special: torch.Tensor) -> torch.Tensor:
    """Bool, same shape as ids [..., L]: does each position begin a word? From the vocabulary table, at and right
    after every special token (a separator ends the word before it), and at the beginning of the block."""
    starts = starts_word[ids] | special
    starts[..., 1:] |= special[..., :-1]
    starts[..., 0] = True
    return starts


def word_start_table(tokenizer) -> torch.Tensor:
    """Bool table over the vocabulary: does token id v begin a new word?

    Asked of the tokenizer's own decoder rather than of a `##` convention, so it holds for any fast tokenizer:
    decoding [ref, v] puts whitespace between ref and v exactly when v starts a word (WordPiece "##ab" -> no
    space; byte-level "Ġab" -> space; Metaspace "▁ab" -> space; a bare space token "Ġ"/"▁" starts the word that
    follows it). `ref` is an ordinary token that decodes to letters without whitespace. The decoder's cosmetic
    cleanup (WordPiece glues "." and "," to the previous word) is switched off on a copy, so punctuation split
    by the pre-tokenizer stays its own word. Special tokens always start words (and so does the token after
    one: callers OR the shifted special mask in). One batched decode of the vocabulary: milliseconds.
    """
    # a private copy, so switching off cleanup never touches the caller's tokenizer
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    decoder = backend.decoder
    if decoder is not None and hasattr(decoder, "cleanup"):
        decoder.cleanup = False
        backend.decoder = decoder
    size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    ref, ref_text = None, ""
    for v in range(size):
        text = backend.decode([v], skip_special_tokens=False)
        if v not in special and text.isalpha():
            ref, ref_text = v, text
            break
    if ref is None:  # no plain word piece at all: every token is its own word
        return torch.ones(size, dtype=torch.bool)
    pairs = backend.decode_batch([[ref, v] for v in range(size)], skip_special_tokens=False)
    starts = torch.tensor([not p.startswith(ref_text) or p[len(ref_text):len(ref_text) + 1].isspace()
                           for p in pairs], dtype=torch.bool)
    starts[[s for s in special if s < size]] = True
    return starts
