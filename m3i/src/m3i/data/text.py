"""Caption tokenizers: a word-level one for the embedded shapes, CLIP's BPE for real image-text corpora.

Both return int64 ``(L,)`` with ``0`` = padding and the end-of-text token as the last non-padding id (what
:class:`m3i.models.text.TextTower` pools), truncated to the context length with the end-of-text token kept.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["WordTokenizer", "ClipBPETokenizer", "build_tokenizer"]


class WordTokenizer:
    """Whitespace tokenizer over a fixed vocabulary: ids ``0`` pad, ``1`` start, ``2`` end, ``3`` unknown, then the
    words in the given order.

    Args:
        vocab: the words; context_length: ``L`` (start and end included).
    """

    PAD, SOT, EOT, UNK = 0, 1, 2, 3

    def __init__(self, vocab: Sequence[str], context_length: int = 16):
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3, got {context_length}")
        self.words = {w: i + 4 for i, w in enumerate(vocab)}
        self.context_length = int(context_length)
        self.vocab_size = len(self.words) + 4

    def __call__(self, text: str) -> torch.Tensor:
        ids = [self.words.get(w, self.UNK) for w in text.lower().split()][: self.context_length - 2]
        ids = [self.SOT, *ids, self.EOT]
        return torch.tensor(ids + [self.PAD] * (self.context_length - len(ids)), dtype=torch.int64)


class ClipBPETokenizer:
    """CLIP's byte-pair tokenizer (``open_clip``; vocabulary 49408, context 77) for LAION / YFCC / CC12M captions.

    Raises:
        ImportError: ``open_clip`` is not installed (``pip install 'm3i[clip]'``).
    """

    vocab_size = 49408

    def __init__(self, context_length: int = 77):
        try:
            import open_clip
        except ImportError as e:
            raise ImportError("text.tokenizer=clip_bpe needs open_clip: pip install 'm3i[clip]'") from e
        self._tok = open_clip.get_tokenizer("ViT-B-32", context_length=context_length)
        self.context_length = int(context_length)

    def __call__(self, text: str) -> torch.Tensor:
        return self._tok([text])[0].to(torch.int64)


def build_tokenizer(kind: str, *, vocab: Sequence[str] = (), context_length: int = 16):
    """``"words"`` (:class:`WordTokenizer` over ``vocab``) or ``"clip_bpe"`` (:class:`ClipBPETokenizer`).

    Raises:
        ValueError: an unknown kind (lists the known ones).
    """
    if kind == "words":
        return WordTokenizer(vocab, context_length)
    if kind == "clip_bpe":
        return ClipBPETokenizer(context_length)
    raise ValueError(f"unknown tokenizer {kind!r}; known: words, clip_bpe")
