"""The subword tokenizer learned from a task corpus (models/bpe_tokenizer.py) and `tokenizer: bpe` training."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tasksup import load_model, resolve_tasks
from tasksup.models.bpe_tokenizer import build_bpe_tokenizer
from tasksup.scoring import common_prefix_len
from tasksup.tasks import PromptBuilder, Task, get_input_space, register_task
from tasksup.train import TrainConfig, train
from tasksup.train.data import sampled_lines
from tasksup.train.loop import build_tokenizer

FIG2_TASKS = ["add_translate", "country", "copy_add", "letters"]
# Two tasks a tiny model tells apart in seconds by their examples alone (as test_train's): every answer "yes" or "no".
WORDS = [register_task(Task(f"test_bpe_{w}", get_input_space("num"), (lambda w: lambda x: w)(w)), replace=True).name
         for w in ("yes", "no")]


@pytest.fixture(scope="module")
def fig2():
    tasks = resolve_tasks(FIG2_TASKS, one_space=False)
    return tasks, build_bpe_tokenizer(sampled_lines(tasks, "\n", seed=0, n=1024), vocab_size=2048)


def test_the_same_corpus_gives_the_same_vocabulary_and_text_round_trips(fig2, tmp_path):
    tasks, tok = fig2
    again = build_bpe_tokenizer(sampled_lines(tasks, "\n", seed=0, n=1024), vocab_size=2048)
    assert tok.get_vocab() == again.get_vocab() and len(tok) == 2048
    tok.save_pretrained(tmp_path)
    text = "".join(sampled_lines(tasks, "\n", seed=1, n=8))  # 8 unseen examples of each of the 14 tasks
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == text
    for loaded in (AutoTokenizer.from_pretrained(tmp_path), PreTrainedTokenizerFast.from_pretrained(tmp_path)):
        assert loaded(text)["input_ids"] == ids


def test_every_answer_starts_a_token_in_context(fig2):
    """No merge crosses the end of a prompt: tok(prompt) is a prefix of tok(prompt + answer) for every task,
    so Eq. 3 scores exactly the answer's own tokens."""
    tasks, tok = fig2
    rng = np.random.default_rng(0)
    for task in tasks:
        builder = PromptBuilder([task], "\n")
        for _ in range(50):
            prompt = builder.build("uniform", 3, rng)
            for answer in prompt.answers:
                head, whole = tok(prompt.text)["input_ids"], tok(prompt.text + answer + "\n")["input_ids"]
                assert common_prefix_len(head, whole) == len(head), (task.name, prompt.text, answer)


def test_frequent_answers_become_whole_tokens_and_words_keep_their_spaces(fig2):
    """Continents (7 answers, each ~1/7 of its task's lines) are single tokens; number words split at words."""
    _, tok = fig2
    for continent in ("Africa", "Europe", "Oceania"):
        assert tok.tokenize(continent) == [continent]
    assert tok.tokenize("ciento cincuenta y tres") == ["ciento", " cincuenta", " y", " tres"]
    assert tok.tokenize("86+67->153") == ["86", "+", "67", "->", "153"]  # digits in runs of at most 3


def test_bpe_digits_1_writes_numbers_digit_by_digit_and_keeps_answers_starting_tokens():
    """bpe_digits = 1 (Llama 2's and Qwen2's rule): no token holds two digits, words are still whole tokens,
    and tok(prompt) stays a prefix of tok(prompt + answer)."""
    tasks = resolve_tasks(FIG2_TASKS, one_space=False)
    tok = build_bpe_tokenizer(sampled_lines(tasks, "\n", seed=0, n=1024), vocab_size=2048, digits=1)
    assert tok.tokenize("86+67->153") == ["8", "6", "+", "6", "7", "->", "1", "5", "3"]
    assert tok.tokenize("ciento cincuenta y tres") == ["ciento", " cincuenta", " y", " tres"]
    assert not [t for t in tok.get_vocab() if sum(c.isdigit() for c in t) > 1]
    rng = np.random.default_rng(1)
    for task in tasks:
        builder = PromptBuilder([task], "\n")
        for _ in range(10):
            prompt = builder.build("uniform", 3, rng)
            head, whole = tok(prompt.text)["input_ids"], tok(prompt.text + prompt.answers[0] + "\n")["input_ids"]
            assert common_prefix_len(head, whole) == len(head), (task.name, prompt.text)


def test_a_runs_bpe_digits_reaches_its_tokenizer():
    tasks = resolve_tasks(WORDS)
    for digits, tokens in ((3, ["34", "->", "yes", "\n"]), (1, ["3", "4", "->", "yes", "\n"])):
        cfg = TrainConfig(tasks=WORDS, tokenizer="bpe", vocab_size=300, bpe_digits=digits)
        assert build_tokenizer(cfg, tasks).tokenize("34->yes\n") == tokens


def test_a_bpe_run_learns_and_saves_a_loadable_subword_model(tmp_path):
    """`tokenizer: bpe` end to end: the run learns the tasks, and its folder loads with a subword vocabulary."""
    cfg = TrainConfig(tasks=WORDS, tokenizer="bpe", vocab_size=300, preset="tiny", n_examples=6, batch_size=16,
                      lr=1e-2, warmup_steps=5, steps=80, log_every=10, eval_every=0, final_eval_prompts=16,
                      save_every=0, cpu_threads=1)
    out = train(cfg, tmp_path / "bpe", progress=False)
    lm = load_model(str(out), device="cpu")
    assert len(lm.tokenizer) == lm.model.config.vocab_size <= 300  # merges stop when no pair repeats
    assert lm.tokenizer.tokenize("34->yes\n") == ["34", "->", "yes", "\n"]
    assert json.loads((out / "final_eval.json").read_text())["min"] > 0.75  # chance: 1/2
    assert lm.answer_probs("12->no\n45->no\n77->", ["yes", "no"])[0, 1] > 0.5
