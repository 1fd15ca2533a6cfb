"""A character-level tokenizer saved as a standard Hugging Face fast tokenizer.

Our from-scratch models read one character per token, so that arithmetic and retrieval are not
confounded by BPE merges. The tokenizer is an ordinary ``PreTrainedTokenizerFast``, so a checkpoint
directory loads with ``AutoTokenizer`` like any Hugging Face model. Its model is a BPE with no merges
over single characters: every character is its own token (an unknown one ``<unk>``), read in one pass
over the string, 3x faster than a WordLevel model behind a one-character regex split (what checkpoints
before 2026-12-07 held; the ids are the same, tests/test_char_tokenizer.py).
"""

from __future__ import annotations

import string
from typing import Iterable

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
BASE_ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"


def build_char_tokenizer(extra_chars: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Printable ASCII plus ``extra_chars`` (e.g. accented letters of number words), one token each."""
    chars = list(dict.fromkeys(BASE_ALPHABET + "".join(sorted(set("".join(extra_chars)) - set(BASE_ALPHABET)))))
    vocab = {tok: i for i, tok in enumerate([PAD, UNK, EOS] + chars)}
    core = Tokenizer(models.BPE(vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    return as_hf_tokenizer(core)


def as_hf_tokenizer(core: Tokenizer) -> PreTrainedTokenizerFast:
    """A ``tokenizers`` model with our special tokens, as a fast tokenizer that ``save_pretrained`` writes."""
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, unk_token=UNK, eos_token=EOS,
                                   clean_up_tokenization_spaces=False)
