"""A subword (BPE) tokenizer trained on a task corpus, saved as a standard Hugging Face fast tokenizer.

The character tokenizer lets a small model write an answer that starts as one task's and ends as
another's ("ciento six"), which no pretrained LLM does: there, an answer's first token already names
its task. A BPE vocabulary trained on the tasks' own examples makes capitals, country names,
continents, numbers and number words single tokens, as they are in an LLM's vocabulary.

The pre-tokenizer keeps the merges from crossing the places where prompts end and answers start: digits
in runs of at most ``digits`` (3: Llama 3's rule; 1: every digit its own token, as Llama 2 and Qwen2),
letters with at most one leading space (GPT-2's), punctuation runs, whitespace. An answer that starts
with a letter or digit after a delimiter such as "->" therefore starts a token, in context and on its own alike.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tasksup.models.char_tokenizer import EOS, PAD, UNK, as_hf_tokenizer

PRE_TOKENS = r"\p{{N}}{{1,{digits}}}| ?\p{{L}}+|[^\s\p{{L}}\p{{N}}]+|\s+"


def build_bpe_tokenizer(corpus: Sequence[str], vocab_size: int, extra_chars: Iterable[str] = (),
                        digits: int = 3) -> PreTrainedTokenizerFast:
    """BPE merges learned from ``corpus`` (lines of task examples) up to ``vocab_size`` tokens; every
    character of the corpus and of ``extra_chars`` stays a token of its own, so no text of these tasks is unknown."""
    alphabet = sorted(set("".join(corpus)) | set("".join(extra_chars)))
    core = Tokenizer(models.BPE(unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(PRE_TOKENS.format(digits=digits)), behavior="isolated")
    core.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK, EOS], initial_alphabet=alphabet,
                                  show_progress=False)
    core.train_from_iterator(corpus, trainer)
    return as_hf_tokenizer(core)
