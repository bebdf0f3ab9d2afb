"""An offline `CLIPTokenizer` built from a word list: CLIP's byte alphabet plus BPE merges
that make every listed word a single token. No hub files are read."""

from __future__ import annotations

import json

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def build_tokenizer(words: list[str], model_max_length: int = 16) -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary holds every byte, and every word of `words` whole."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=100_000, min_frequency=1, initial_alphabet=alphabet,
        end_of_word_suffix="</w>", show_progress=False,
    )
    bpe.train_from_iterator([w.lower() for w in words], trainer=trainer)
    trained = bpe.get_vocab()
    # CLIP's layout: bytes, bytes with the end-of-word mark, merged tokens, then the specials.
    vocab: dict[str, int] = {}
    for tok in alphabet + [a + "</w>" for a in alphabet]:
        vocab.setdefault(tok, len(vocab))
    for tok, _ in sorted(trained.items(), key=lambda kv: kv[1]):
        vocab.setdefault(tok, len(vocab))
    for tok in (BOS, EOS):
        vocab.setdefault(tok, len(vocab))
    merges = json.loads(bpe.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
