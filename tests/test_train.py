"""`tasksup train` (§4, Eq. 1): loss masking, the loss itself, a tiny run that learns, checkpoints, resume, errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from reference import in_context_logprob
from safetensors.torch import load_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from typer.testing import CliRunner

from tasksup import TasksupError, load_model, resolve_tasks
from tasksup.cli import app
from tasksup.models import LanguageModel, build_char_tokenizer
from tasksup.tasks import Task, get_input_space, register_task
from tasksup.train import TrainConfig, train
from tasksup.train.data import SequenceSource, collate, task_probabilities
from tasksup.train.loop import answer_loss, build_model

# Two tasks a tiny model learns in seconds: every answer is "a" (or every answer is "b"), whatever the
# number. Which one a prompt uses can only be read from its examples: in-context learning, chance 1/2.
CONST = [register_task(Task(f"test_const_{c}", get_input_space("num"), (lambda c: lambda x: c)(c)), replace=True).name
         for c in "ab"]
TINY = dict(tasks=CONST, preset="tiny", n_examples=6, batch_size=16, lr=1e-2, warmup_steps=5, log_every=5,
            eval_every=0, eval_prompts=64, final_eval_prompts=16, save_every=0, cpu_threads=1)


def source_for(tasks, tokenizer, target_delimiter=True, m=5, first_answer=False):
    return SequenceSource(resolve_tasks(tasks), tokenizer, n_examples=m, delimiter="\n",
                          target_delimiter=target_delimiter, seed=3, first_answer=first_answer)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 120 steps (seconds)."""
    out = tmp_path_factory.mktemp("train") / "const"
    return train(TrainConfig(**TINY, steps=120), out, progress=False)


# -- loss masking ---------------------------------------------------------------------------------

@pytest.mark.parametrize("target_delimiter", [True, False])
@pytest.mark.parametrize("first_answer", [False, True])
def test_targets_are_exactly_answers_2_to_m(target_delimiter, first_answer):
    """Walk the examples by hand: targets = answers of examples 2..m (+ the delimiter after each);
    with ``target_first_answer``, example 1's answer too."""
    tok = build_char_tokenizer()
    src = source_for("plus", tok, target_delimiter, m=5, first_answer=first_answer)
    first = 0 if first_answer else 1
    for index in range(20):
        ids, mask = src.sequence(step=7, index=index)
        text = tok.decode(ids)
        lines = text.split("\n")[:-1]
        assert len(lines) == 5 and text.endswith("\n")
        expected = []
        for j, line in enumerate(lines):
            prefix, answer = line.split("->")
            expected += [False] * (len(prefix) + 2) + [j >= first] * len(answer) + [j >= first and target_delimiter]
        assert mask == expected
    assert src.batch(step=7, indices=range(4)).n_answers == 4 * (5 - first)


def test_targets_map_through_offsets_for_multichar_tokens():
    """A tokenizer that merges digit runs: the answer '47' is ONE token and only it (and '\\n') is a target."""
    chars = build_char_tokenizer()
    vocab = dict(chars.get_vocab())
    for n in range(10, 110):
        vocab.setdefault(str(n), len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"\d+|[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    src = source_for("plus", tok, m=4)
    ids, mask = src.sequence(step=0, index=0)
    pieces = [tok.convert_ids_to_tokens(i) for i in ids]
    lines = "".join(pieces).split("\n")[:-1]
    want = [a for line in lines[1:] for a in (line.split("->")[1], "\n")]
    assert [p for p, m in zip(pieces, mask) if m] == want
    assert len(ids) == 5 * len(lines)  # num, '-', '>', answer, '\n': two-digit runs are single tokens


def test_eq1_loss_equals_mean_answer_logprob_from_the_scorer():
    """answer_loss == mean over examples 2..m of -log P(answer + '\\n' | text before it), computed by
    the slow reference (one full forward per string) through the scorer's definition."""
    tok = build_char_tokenizer()
    model = build_model(TrainConfig(preset="tiny"), tok, 128).eval()
    src = source_for("plus", tok, m=5)
    lm = LanguageModel(model, tok, name="tiny")
    batch = src.batch(step=1, indices=range(3))
    with torch.no_grad():
        fast = float(answer_loss(model, batch.input_ids, batch.targets, batch.n_answers))
    slow = []
    for i in range(3):
        rng = np.random.default_rng([3, 1, 1, i])
        k = int(rng.integers(len(src.tasks)))
        seq = src.builders[k].training_sequence(src.tasks[k], 5, rng)
        for start, end in seq.answer_spans[1:]:
            slow.append(-in_context_logprob(lm, seq.text[:start], seq.text[start:end + 1]))
    assert fast == pytest.approx(np.mean(slow), rel=1e-5)


def test_sequences_of_tasks_over_several_input_spaces_hold_one_task_each():
    """A Fig. 2-style source (four input spaces): each training sequence is m examples of one task in
    that task's own format, its targets are that task's answers, and each eval prompt is single-task."""
    from tasksup.train.data import family_chars

    tasks = resolve_tasks(["copy_add", "country", "letters"], one_space=False)
    tok = build_char_tokenizer(family_chars(tasks, "\n"))
    src = SequenceSource(tasks, tok, n_examples=4, delimiter="\n", target_delimiter=False, seed=3)
    seen = set()
    for i in range(40):
        rng = np.random.default_rng([3, 1, 0, i])
        task = tasks[int(rng.integers(len(tasks)))]
        seq = src.builders[tasks.index(task)].training_sequence(task, 4, rng)
        ids, tgt = src.sequence(0, i)
        assert tok.decode(ids) == seq.text
        assert tok.decode([t for t, m in zip(ids, tgt) if m]) == "".join(seq.text[s:e] for s, e in seq.answer_spans[1:])
        assert seq.task == task.name and seq.text.count(task.inputs.separator) >= 4
        seen.add(task.inputs.name)
    assert seen == {"pair_at", "country", "word"}
    for k, task in enumerate(tasks):
        p = src.eval_prompt(k, 0, 3)
        assert p.tasks == [task.name] and p.example_tasks == [task.name] * 3


def test_sequence_chars_fills_each_sequence_to_a_length():
    """sequence_chars: every sequence holds 2..m examples and stays within the length unless two examples
    already pass it; adding one more example would have passed it; n_answers counts the scored answers."""
    tasks = resolve_tasks(["copy_add", "add_translate"], one_space=False)
    from tasksup.train.data import family_chars

    tok = build_char_tokenizer(family_chars(tasks, "\n"))
    src = SequenceSource(tasks, tok, n_examples=40, delimiter="\n", target_delimiter=True, seed=3, max_chars=120)
    counts = {}
    for i in range(60):
        rng = np.random.default_rng([3, 1, 0, i])
        k = int(rng.integers(len(tasks)))
        seq = src.builders[k].training_sequence(tasks[k], 40, rng, 120)
        n = len(seq.answer_spans)
        assert 2 <= n < 40 and (len(seq.text) <= 120 or n == 2)
        counts.setdefault(tasks[k].inputs.name, []).append(n)
    assert min(counts["pair_at"]) > max(counts["pair_arrow"])  # "57@38=95" lines are shorter than number words
    batch = src.batch(0, range(8))
    rows = src.encode(0, range(8))
    assert batch.n_answers == sum(len(tok.decode([t for t, m in zip(ids, tgt) if m]).split("\n")) - 1
                                  for ids, tgt in rows)


def test_example_noise_writes_wrong_answers_of_the_same_task_that_are_not_targets():
    """example_noise 0.3: ~30% of the examples answer wrongly, each with the task's answer to another input
    (a number for the copy tasks and add_ops); the loss targets are exactly the right answers 2..m."""
    from tasksup.train.data import family_chars

    tasks = resolve_tasks("copy_add")
    tok = build_char_tokenizer(family_chars(tasks, "\n"))
    src = SequenceSource(tasks, tok, n_examples=20, delimiter="\n", target_delimiter=True, seed=3, noise=0.3)
    n_wrong = n_all = 0
    for i in range(60):
        rng = np.random.default_rng([3, 1, 0, i])
        task = tasks[int(rng.integers(3))]
        seq = src.builders[0].training_sequence(task, 20, rng, noise=0.3)
        ids, tgt = src.sequence(0, i)
        assert tok.decode(ids) == seq.text
        lines = seq.text.split("\n")[:-1]
        for line, wrong in zip(lines, seq.noisy):
            a, b, answer = (int(v) for v in line.replace("@", " ").replace("=", " ").split())
            right = {"copy_op1": a, "copy_op2": b, "add_ops": a + b}[task.name]
            assert (answer != right) == wrong
        targets = "".join(line.split("=")[1] + "\n" for j, (line, wrong) in enumerate(zip(lines, seq.noisy))
                          if j >= 1 and not wrong)
        assert tok.decode([t for t, m in zip(ids, tgt) if m]) == targets
        n_wrong, n_all = n_wrong + sum(seq.noisy), n_all + len(lines)
    assert abs(n_wrong / n_all - 0.3) < 0.05
    constant = SequenceSource(resolve_tasks(CONST), tok, n_examples=4, delimiter="\n", target_delimiter=True,
                              seed=3, noise=0.5)
    with pytest.raises(TasksupError, match="example_noise needs a task with more than one answer"):
        constant.encode(0, range(8))


def test_task_noise_answers_examples_by_other_tasks_over_the_same_inputs_that_are_not_targets():
    """task_noise 0.3 on [plus, ret]: ~30% of a sequence's examples are answered by another task over the same
    inputs (a plus sequence borrows only plus tasks), each right for that task; the targets are exactly the
    sequence task's answers 2..m. task_noise 0 draws the sequences of a run without the key."""
    from tasksup.train.data import family_chars

    tasks = resolve_tasks(["plus", "ret"], one_space=False)
    tok = build_char_tokenizer(family_chars(tasks, "\n"))
    src = SequenceSource(tasks, tok, n_examples=12, delimiter="\n", target_delimiter=True, seed=3, task_noise=0.3)
    n_other = n_all = 0
    for i, seq in enumerate(src.training_sequences(0, range(80))):
        ids, tgt = src.sequence(0, i)
        assert tok.decode(ids) == seq.text
        lines = seq.text.split("\n")[:-1]
        family = seq.task.rstrip("0123456789")
        for line, name, wrong in zip(lines, seq.example_tasks, seq.noisy):
            x, answer = line.split("->")
            assert name.rstrip("0123456789") == family and wrong == (name != seq.task)
            k = int(name[len(family):])
            assert answer == (str(int(x) + k) if family == "plus" else x[k - 1])
        targets = "".join(line.split("->")[1] + "\n" for j, (line, wrong) in enumerate(zip(lines, seq.noisy))
                          if j >= 1 and not wrong)
        assert tok.decode([t for t, m in zip(ids, tgt) if m]) == targets
        n_other, n_all = n_other + sum(seq.noisy), n_all + len(lines)
    assert abs(n_other / n_all - 0.3) < 0.05
    clean = SequenceSource(tasks, tok, n_examples=12, delimiter="\n", target_delimiter=True, seed=3)
    plain = SequenceSource(tasks, tok, n_examples=12, delimiter="\n", target_delimiter=True, seed=3, task_noise=0.0)
    assert clean.encode(0, range(20)) == plain.encode(0, range(20))


def fig2_mixed_source(groups=None, per_group=1, max_tasks=4, share=0.5, seed=5):
    """The Figure-2 model's tasks (four families over four input spaces) with a mixed corpus."""
    from tasksup.train.data import MixedCorpus, family_chars

    spec = ["add_translate", "country", "copy_add", "letters"]
    tasks = resolve_tasks(spec, one_space=False)
    mixed = MixedCorpus(tasks, spec, groups, share=share, alpha=1.0, max_tasks=max_tasks, per_group=per_group)
    tok = build_char_tokenizer(family_chars(tasks, "\n"))
    return SequenceSource(tasks, tok, n_examples=16, delimiter="\n", target_delimiter=True, seed=seed, mixed=mixed), tok


def test_mixed_sequences_never_hold_a_held_out_combination():
    """mix_share 0.5, up to 4 tasks, mix_per_group 1 over the four Figure-2 families: in 6,400 sampled training
    sequences no sequence holds two tasks of one family (so no mixture Figure 2 scores was ever seen), while about
    half of them mix tasks, 2, 3 and 4 at a time, and every pair of tasks from different families occurs."""
    from itertools import combinations

    src, _ = fig2_mixed_source()
    family = {t: f for f in ("add_translate", "country", "copy_add", "letters") for t in
              (x.name for x in resolve_tasks(f))}
    sizes, pairs = [], set()
    for step in range(400):
        for seq in src.training_sequences(step, range(16)):
            present = sorted(set(seq.example_tasks))
            held = [f for f in set(family.values()) if sum(family[t] == f for t in present) > 1]
            assert not held, (seq.task, present)
            sizes.append(len(present))
            pairs.update(combinations(present, 2))
    sizes = np.bincount(sizes)
    assert 0.44 < sizes[2:].sum() / sizes.sum() < 0.56  # Dirichlet weights may leave a drawn task out
    assert sizes[2] and sizes[3] and sizes[4]
    cross = {(a, b) for a, b in combinations(sorted(family), 2) if family[a] != family[b]}
    assert pairs == cross


def test_mixed_holdout_allows_at_most_per_group_tasks_of_a_group():
    """numeric6's recipe: one group (the family), mix_per_group 2, mix_max_tasks 2: every mixed sequence holds two
    of the six tasks, never three; declared groups bind tasks across families, and a task in no group is free."""
    from tasksup.train.data import MixedCorpus

    tasks = resolve_tasks("numeric6")
    tok = build_char_tokenizer()
    mixed = MixedCorpus(tasks, ["numeric6"], None, share=1.0, alpha=1.0, max_tasks=2, per_group=2)
    src = SequenceSource(tasks, tok, n_examples=24, delimiter="\n", target_delimiter=True, seed=1, mixed=mixed)
    counts = [len(set(s.example_tasks)) for step in range(100) for s in src.training_sequences(step, range(16))]
    assert max(counts) == 2 and counts.count(2) > 0.9 * len(counts)
    src, _ = fig2_mixed_source(groups=[["add", "capital"], ["copy_op1"]], per_group=1, max_tasks=4)
    together = set()
    for step in range(200):
        for seq in src.training_sequences(step, range(16)):
            present = set(seq.example_tasks)
            assert not {"add", "capital"} <= present
            together |= {frozenset((a, b)) for a in present for b in present if a < b}
    assert frozenset(("add", "add_en")) in together and frozenset(("add_en", "capital")) in together


def test_mixed_sequences_target_every_answer_with_its_own_task():
    """In a mixed sequence each example is its task's right answer to its input, and the loss targets are the
    answers of examples 2..m, whichever task wrote them (Eq. 1 per example). mix_share 0 draws the sequences of a
    run without the keys."""
    from tasksup.tasks import get_task, query_answers

    src, tok = fig2_mixed_source(max_tasks=2)
    plural = 0
    for i, seq in enumerate(src.training_sequences(3, range(40))):
        ids, tgt = src.sequence(3, i)
        assert tok.decode(ids) == seq.text and not any(seq.noisy)
        lines = seq.text.split("\n")[:-1]
        assert len(lines) == len(seq.example_tasks) == len(seq.answer_spans)
        for line, name, (s, e) in zip(lines, seq.example_tasks, seq.answer_spans):
            task, answer = get_task(name), seq.text[s:e]
            assert line.endswith(answer)
            assert query_answers([task], line[:len(line) - len(answer)]) == [answer]
        targets = "".join(seq.text[s:e] + "\n" for s, e in seq.answer_spans[1:])
        assert tok.decode([t for t, m in zip(ids, tgt) if m]) == targets
        plural += len(set(seq.example_tasks)) > 1
    assert plural > 10
    one_task, _ = fig2_mixed_source(share=0.0)
    plain = SequenceSource(one_task.tasks, tok, n_examples=16, delimiter="\n", target_delimiter=True, seed=5)
    assert [s.text for s in one_task.training_sequences(0, range(16))] == \
        [s.text for s in plain.training_sequences(0, range(16))]


@pytest.mark.parametrize("config", ["train_fig2_small_mixed_settings.yaml", "train_fig2_small_mixed_pairs.yaml",
                                    "train_fig2_small_mixed_pairs_stage2.yaml", "train_numeric6_mixed_l.yaml"])
def test_the_committed_mixed_corpora_never_held_a_held_out_combination(config):
    """Every sequence of every step of the shipped stand-ins' runs, drawn as the run drew it: no Figure-2 setting's
    two tasks together (fig2-small), never more than 2 of the 6 numeric6 tasks (numeric6-mixed-*: one seed, so one
    stream for every size); and mixing happened (about mix_share of the sequences)."""
    from pathlib import Path

    from tasksup.train import load_train_config

    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / config)
    tasks = resolve_tasks(cfg.tasks, one_space=False)
    src = SequenceSource.from_config(cfg, tasks, build_char_tokenizer())
    spec = [cfg.tasks] if isinstance(cfg.tasks, str) else cfg.tasks
    family = {t.name: f for f in spec for t in resolve_tasks(f)}
    mixed = total = 0
    for step in range(cfg.steps):
        for seq in src.training_sequences(step, range(cfg.batch_size)):
            present = set(seq.example_tasks)
            per_family = np.bincount([spec.index(family[t]) for t in present])
            assert per_family.max() <= cfg.mix_per_group, (step, sorted(present))
            mixed, total = mixed + (len(present) > 1), total + 1
    assert abs(mixed / total - cfg.mix_share) < 0.05


def test_a_mixed_corpus_run_trains_and_records_its_recipe(tmp_path):
    """A tiny run with mix_share trains, and train_config.yaml records every mix_* key as run."""
    import yaml

    tasks = CONST + [register_task(Task("test_const_c", get_input_space("num"), lambda x: "c"), replace=True).name]
    cfg = TrainConfig(**dict(TINY, tasks=tasks), steps=10, mix_share=0.5, mix_alpha=0.5, mix_max_tasks=2,
                      mix_groups=[CONST])
    out = train(cfg, tmp_path / "mixed", progress=False)
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert {k: saved[k] for k in saved if k.startswith("mix_")} == {
        "mix_share": 0.5, "mix_alpha": 0.5, "mix_max_tasks": 2, "mix_groups": [CONST], "mix_per_group": 1}


def test_example_dropout_hides_examples_exactly_as_deleting_them():
    """example_dropout 0.5: on one-layer GPT-2 and Llama models, the logits of every token equal those of the same
    sequence with the examples hidden from that token's example deleted (positions kept, a plain causal mask);
    about half of the earlier examples are hidden; 0 builds no mask. (With more layers a hidden example can still
    reach a query through an example that saw it: the mask removes direct reads only; docs/training.md.)"""
    tok = build_char_tokenizer()
    tasks = resolve_tasks("plus")
    src = SequenceSource(tasks, tok, n_examples=6, delimiter="\n", target_delimiter=True, seed=3, example_dropout=0.5)
    batch = src.batch(2, range(6))
    assert batch.attention_mask.shape == (6, 1) + batch.input_ids.shape[1:] * 2
    for arch in ("gpt2", "llama"):
        model = build_model(TrainConfig(tasks="plus", preset="tiny", n_layer=1, architecture=arch), tok, 128).eval()
        with torch.no_grad():
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            hidden = total = 0
            for b, seq in enumerate(src.training_sequences(2, range(6))):
                starts = [0] + [e + 1 for _, e in seq.answer_spans[:-1]]  # one character per token: offsets are ids
                ends = [e + 1 for _, e in seq.answer_spans]
                mask = batch.attention_mask[b, 0]
                for j in range(1, len(starts)):
                    seen = [i for i in range(j + 1) if i == j or bool(mask[starts[j], starts[i]])]
                    hidden, total = hidden + j + 1 - len(seen), total + j
                    keep = torch.cat([torch.arange(starts[i], ends[i]) for i in seen])
                    causal = torch.ones(len(keep), len(keep), dtype=torch.bool).tril()[None, None]  # positions jump:
                    ref = model(input_ids=batch.input_ids[b, keep][None], position_ids=keep[None],  # no packing guess
                                attention_mask=causal).logits[0, -(ends[j] - starts[j]):]
                    assert torch.allclose(logits[b, starts[j]:ends[j]], ref, atol=1e-5)
        assert 0.3 < hidden / total < 0.7
    plain = SequenceSource(tasks, tok, n_examples=6, delimiter="\n", target_delimiter=True, seed=3)
    assert plain.batch(2, range(6)).attention_mask is None
    assert torch.equal(plain.batch(2, range(6)).input_ids, batch.input_ids)


def test_llama_architecture_trains_resumes_and_loads(tmp_path):
    """architecture: llama: a LlamaForCausalLM (RoPE, RMSNorm, SwiGLU, tied embeddings) that trains, resumes to the
    same weights as an uninterrupted run, and loads through tasksup.load_model and AutoModelForCausalLM."""
    cfg = TrainConfig(**TINY, steps=20, architecture="llama")
    whole = train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "parts", stop_after=10, progress=False)
    parts = train(cfg, tmp_path / "parts", resume=True, progress=False)
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(parts / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    model = AutoModelForCausalLM.from_pretrained(whole)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.tie_word_embeddings
    assert model.config.intermediate_size == 8 * -(-model.config.hidden_size // 3)
    summary = json.loads((whole / "train_summary.json").read_text())
    assert summary["architecture"] == "llama" and summary["model_size"]["n_layer"] == 2
    lm = load_model(str(whole), device="cpu")
    assert lm.answer_probs("12->a\n45->a\n77->", ["a", "b"]).shape == (1, 2)


def ret_task_of(text: str) -> int:
    """Which ret task wrote a sequence of "abcdefgh->c" lines (its characters are distinct): 1..8."""
    inp, out = text.split("\n")[0].split("->")
    return inp.index(out) + 1


def test_task_weights_set_each_tasks_share_of_sequences():
    """task_weights {ret1: 5}: ret1 writes 5/12 of the sequences, each other task 1/12. Without weights a
    sequence is drawn exactly as before the option existed: task = default_rng([seed, 1, step, i]).integers(8)."""
    tasks, tok = resolve_tasks("ret"), build_char_tokenizer()
    probs = task_probabilities(tasks, {"ret1": 5})
    assert probs == pytest.approx([5 / 12] + [1 / 12] * 7) and task_probabilities(tasks, {}) is None
    weighted = SequenceSource(tasks, tok, n_examples=3, delimiter="\n", target_delimiter=True, seed=0, task_probs=probs)
    drawn = [ret_task_of(tok.decode(ids)) for ids, _ in weighted.encode(0, range(1200))]
    assert abs(drawn.count(1) / 1200 - 5 / 12) < 0.05
    assert all(abs(drawn.count(j) / 1200 - 1 / 12) < 0.03 for j in range(2, 9))
    uniform = source_for("ret", tok, m=3)  # seed 3
    for i in range(20):
        rng = np.random.default_rng([3, 1, 0, i])
        expected = uniform.builders[0].training_sequence(tasks[int(rng.integers(8))], 3, rng).text
        assert tok.decode(uniform.sequence(0, i)[0]) == expected


def test_sequences_are_a_function_of_seed_step_index():
    tok = build_char_tokenizer()
    a, b = source_for("ret", tok), source_for("ret", tok)
    assert a.sequence(4, 2) == b.sequence(4, 2)
    assert a.sequence(4, 2) != a.sequence(4, 3)
    ids, tgt = collate([a.sequence(0, 0), source_for("plus", tok).sequence(0, 0)], pad_id=0)
    assert ids.shape[0] == 2 and not tgt[ids == 0].any()  # padding is never a target


def test_random_position_offsets_stay_in_context_and_follow_the_seed():
    tok = build_char_tokenizer()
    tasks = resolve_tasks("ret")
    src = SequenceSource(tasks, tok, n_examples=5, delimiter="\n", target_delimiter=True, seed=3, max_length=128,
                         random_offsets=True)
    batch = src.batch(7, range(16))
    width = batch.input_ids.shape[1]
    starts = batch.position_ids[:, 0]
    assert torch.equal(batch.position_ids, starts[:, None] + torch.arange(width))  # consecutive within a sequence
    assert starts.min() >= 0 and batch.position_ids.max() < 128 and len(set(starts.tolist())) > 1
    assert torch.equal(src.batch(7, range(16)).position_ids, batch.position_ids)
    plain = SequenceSource(tasks, tok, n_examples=5, delimiter="\n", target_delimiter=True, seed=3, max_length=128)
    assert plain.batch(7, range(16)).position_ids is None and torch.equal(plain.batch(7, range(16)).input_ids,
                                                                          batch.input_ids)


# -- a tiny run ------------------------------------------------------------------------------------

def test_tiny_run_loss_falls_and_beats_chance(trained):
    log = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])
    evals = [r for r in log if "eval" in r]
    assert evals[-1]["step"] == 120
    assert evals[-1]["eval_min"] > 0.75  # chance: 1/2 (a model that knows only "the answer is a or b")
    final = json.loads((trained / "final_eval.json").read_text())
    assert set(final["per_task"]) == set(CONST) and final["min"] > 0.75


def test_checkpoint_round_trip_through_from_pretrained(trained):
    plain = AutoModelForCausalLM.from_pretrained(trained).eval()
    auto_tok = AutoTokenizer.from_pretrained(trained)
    lm = load_model(str(trained), device="cpu")
    text = "12->a\n45->a\n77->"
    assert auto_tok(text)["input_ids"] == lm.encode(text) == [lm.tokenizer.convert_tokens_to_ids(c) for c in text]
    ids = torch.tensor([lm.encode(text)])
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, lm.model(ids).logits)
    weights = load_file(str(trained / "model.safetensors"))
    assert all(not k.startswith(("opt.", "rng.")) for k in weights)  # no optimizer state next to the model
    assert lm.answer_probs(text, ["a", "b"])[0, 0] > 0.5


def test_resume_continues_from_the_same_step(tmp_path):
    cfg = TrainConfig(**dict(TINY, final_eval_prompts=0), steps=12)
    straight = train(cfg, tmp_path / "straight", progress=False)
    cut = train(cfg, tmp_path / "cut", stop_after=5, progress=False)
    assert json.loads((cut / "resume" / "state.json").read_text())["step"] == 5
    with pytest.raises(TasksupError, match="--resume"):
        train(cfg, cut, progress=False)
    with pytest.raises(TasksupError, match="differs in lr"):
        train(replace(cfg, lr=5e-2), cut, resume=True, progress=False)
    saved = (cut / "train_config.yaml").read_text()  # a run started before a key was added resumes with its default
    (cut / "train_config.yaml").write_text("\n".join(line for line in saved.splitlines() if "init_std" not in line))
    train(cfg, cut, resume=True, progress=False)
    assert json.loads((cut / "resume" / "state.json").read_text())["step"] == 12
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    steps = [json.loads(line)["step"] for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps] == [5, 10, 12, 12]  # loss lines, then the final eval line
    assert len((cut / "COMMAND.txt").read_text().splitlines()) == 2


def test_finish_writes_the_end_of_run_files_where_it_stops(tmp_path):
    """--finish at --stop-after: final eval, curves and summary of the model at that step; --resume then
    continues the same schedule and rewrites them at the end."""
    cfg = TrainConfig(**dict(TINY, eval_every=4), steps=12)
    out = train(cfg, tmp_path / "run", stop_after=8, progress=False)
    assert not (out / "final_eval.json").exists()
    train(cfg, out, resume=True, stop_after=8, finish=True, progress=False)  # no step run: only the end files
    summary = json.loads((out / "train_summary.json").read_text())
    assert (summary["steps"], summary["scheduled_steps"]) == (8, 12)
    assert json.loads((out / "final_eval.json").read_text())["n_prompts_per_task"] == TINY["final_eval_prompts"]
    evals = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if "eval" in x]
    assert evals == [4, 8]  # step 8's eval was logged while training: not repeated
    train(cfg, out, resume=True, progress=False)
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 12


def test_snapshots_are_loadable_copies_along_training(tmp_path):
    """snapshot_every keeps the model of every k-th step (resumable key); the last one is the final model."""
    cfg = TrainConfig(**dict(TINY, final_eval_prompts=0), steps=8, snapshot_every=4)
    out = train(cfg, tmp_path / "run", stop_after=4, progress=False)
    train(cfg, out, resume=True, progress=False)
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps == ["step-000004", "step-000008"]
    final, last = load_file(str(out / "model.safetensors")), load_file(str(out / "snapshots" / snaps[-1] / "model.safetensors"))
    assert all(torch.equal(final[k], last[k]) for k in final)
    first = load_file(str(out / "snapshots" / snaps[0] / "model.safetensors"))
    assert any(not torch.equal(first[k], final[k]) for k in final)
    assert load_model(str(out / "snapshots" / snaps[0])).answer_probs("12->a\n34->", ["a", "b"]).shape == (1, 2)


def test_init_from_starts_a_stage_from_a_trained_model(trained, tmp_path):
    """A curriculum stage (init_from) starts from the trained weights and tokenizer, not a fresh init:
    with a vanishing learning rate its model equals the one it started from."""
    stage = TrainConfig(**dict(TINY, final_eval_prompts=0, lr=1e-12), steps=2, init_from=str(trained))
    out = train(stage, tmp_path / "stage2", progress=False)
    before, after = load_file(str(trained / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(before) == set(after)
    assert max(float((before[k] - after[k]).abs().max()) for k in before) < 1e-6
    assert (out / "tokenizer.json").read_text() == (trained / "tokenizer.json").read_text()
    fresh = train(replace(stage, init_from=None), tmp_path / "fresh", progress=False)
    assert any(not torch.allclose(before[k], v) for k, v in load_file(str(fresh / "model.safetensors")).items())


def test_init_from_errors(trained, tmp_path):
    from tasksup.train.config import validate

    with pytest.raises(TasksupError, match="remove n_embd, position_init"):
        validate(TrainConfig(tasks="ret", init_from=str(trained), n_embd=64, position_init="lines"))
    accented = register_task(Task("test_const_e_acute", get_input_space("num"), lambda x: "é"), replace=True).name
    with pytest.raises(TasksupError, match="lacks characters these tasks write: 'é'"):  # the char vocab is ASCII
        train(TrainConfig(**dict(TINY, tasks=[accented]), init_from=str(trained)), tmp_path / "x", progress=False)
    with pytest.raises(TasksupError, match="positions; these sequences need"):
        train(TrainConfig(**dict(TINY, n_examples=60), init_from=str(trained)), tmp_path / "y", progress=False)
    with pytest.raises(TasksupError, match="not a model directory"):
        train(TrainConfig(**TINY, init_from=str(tmp_path / "nowhere")), tmp_path / "z", progress=False)


# -- bad configs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("body, message", [
    ("tasks: ret\nsteps: ten\n", "steps = 'ten' is not of type"),
    ("tasks: ret\nlearning_rate: 0.1\n", "unknown config key 'learning_rate'"),
    ("tasks: ret\npreset: huge\n", "preset must be one of"),
    ("tasks: nonsense\n", "unknown task or family 'nonsense'"),
    ("tasks: ret\nn_examples: 1\n", "n_examples must be at least 2"),
    ("tasks: ret\nn_embd: 30\nn_head: 4\n", "multiple of n_head"),
    ("tasks: ret\nn_positions: 16\n", "more than the context of 16"),
    ("tasks: ret\nposition_offset: shifted\n", "position_offset must be one of"),
    ("tasks: ret\ntask_weights: {ret1: 0}\n", "task_weights must be numbers > 0"),
    ("tasks: ret\ntask_weights: {ret1: two}\n", "task_weights must be numbers, got"),
    ("tasks: ret\ntask_weights: {plus1: 2}\n", "task_weights names ['plus1'], which are not among"),
    ("tasks: ret\ntokenizer: wordpiece\n", "tokenizer must be one of char, bpe"),
    ("tasks: ret\nexample_noise: 1\n", "example_noise must be"),
    ("tasks: ret\ntokenizer: bpe\nbpe_digits: 0\n", "bpe_digits must be"),
    ("tasks: ret\ntask_noise: 1\n", "task_noise must be"),
    ("tasks: ret\nexample_dropout: -0.1\n", "example_dropout must be"),
    ("tasks: ret\nmix_share: 1.5\n", "mix_share must be"),
    ("tasks: ret\nmix_share: 0.5\nmix_alpha: 0\n", "mix_alpha must be"),
    ("tasks: ret\nmix_share: 0.5\nmix_max_tasks: 1\n", "mix_max_tasks must be"),
    ("tasks: ret\nmix_share: 0.5\nmix_per_group: 0\n", "mix_per_group must be"),
    ("tasks: ret\nmix_share: 0.5\nmix_groups: ret\n", "mix_groups = 'ret' is not of type"),
    ("tasks: ret\nmix_share: 0.5\nmix_groups: [[]]\n", "mix_groups must be a list of non-empty lists"),
    ("tasks: ret\nmix_share: 0.5\nmix_groups: [[plus1]]\n", "mix_groups names 'plus1', which is not among"),
    ("tasks: ret\nmix_share: 0.5\nmix_groups: [[ret], [ret1]]\n", "mix_groups puts task 'ret1' in two groups"),
    ("tasks: ret\nmix_share: 0.5\n", "the holdout (mix_groups, mix_per_group 1) lets no two tasks share"),
    ("tasks: ret\nmix_share: 0.5\nmix_per_group: 2\nmix_max_tasks: 3\n", "mix_max_tasks is 3, but the holdout"),
    ("tasks: ret\nmix_share: 0.5\ntask_noise: 0.1\n", "it takes neither example_noise nor task_noise"),
    ("tasks: ret\narchitecture: rwkv\n", "architecture must be one of gpt2, llama"),
    ("tasks: ret\narchitecture: llama\nposition_init: sinusoidal\n", "architecture llama (RoPE) takes neither"),
])
def test_bad_config_is_a_one_line_error(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body + "preset: tiny\n" * ("preset" not in body))
    res = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tasksup: error:") and message in lines[0]


def test_line_position_init_repeats_every_example_line():
    """position_init: lines on ret (12-token lines "abcdefgh->c\\n"): rows p and p + 12 differ by the same
    line-table step for every p of a line, rows of one line differ by the within-line table only, and the
    scale is init_std."""
    from tasksup.train.data import line_length

    tok = build_char_tokenizer()
    cfg = TrainConfig(tasks="ret", preset="tiny", position_init="lines", init_std=0.1)
    assert line_length(resolve_tasks("ret"), "\n", tok) == 12
    wpe = build_model(cfg, tok, 144, resolve_tasks("ret")).transformer.wpe.weight.detach()
    step = wpe[12:24] - wpe[0:12]  # B[line 2] - B[line 1], the same for the 12 positions of a line
    torch.testing.assert_close(step, step[:1].expand_as(step))
    within = wpe[24:36] - wpe[24]  # A[j] - A[0], the same in every line
    torch.testing.assert_close(within, wpe[60:72] - wpe[60])
    assert 0.07 < float(wpe.std()) < 0.13
    assert not torch.allclose(wpe[0], wpe[1])


def test_line_position_init_needs_fixed_lines_and_no_offsets():
    from tasksup.train.config import validate

    with pytest.raises(TasksupError, match="fixed length"):  # plus: 2- or 3-digit answers
        build_model(TrainConfig(tasks="plus", preset="tiny", position_init="lines"), build_char_tokenizer(), 128,
                    resolve_tasks("plus"))
    with pytest.raises(TasksupError, match="position_offset"):
        validate(TrainConfig(tasks="ret", position_init="lines", position_offset="random"))


def test_training_curves_and_the_plateau_break(trained, tmp_path):
    """curves.png is written at the end; read_curves gives the logged losses and per-task evals; the
    break step is the first eval whose mean accuracy reaches 0.5; the CLI draws several runs."""
    from tasksup.train.curves import read_curves

    assert (trained / "curves.png").is_file()
    curves = read_curves(trained)
    lines = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert curves.loss == [r["loss"] for r in lines if "loss" in r]
    assert set(curves.accuracy) == set(CONST)
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["break_step"] == curves.break_step()

    run = tmp_path / "synthetic"
    run.mkdir()
    evals = [(100, 0.1, 0.2), (200, 0.4, 0.5), (300, 0.9, 0.3), (400, 1.0, 1.0)]
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 1.0}) + "\n" + json.dumps({"step": s, "eval": {"x": a, "y": b}}) + "\n"
        for s, a, b in evals))
    assert read_curves(run).break_step() == 300  # (0.9 + 0.3) / 2 = 0.6; step 200's mean is 0.45
    assert read_curves(run).break_step(0.95) == 400
    res = CliRunner().invoke(app, ["train-curves", str(trained), str(run), "--out", str(tmp_path / "fig")])
    assert res.exit_code == 0, res.output
    assert '"break_step": 300' in res.output and (tmp_path / "fig.png").is_file()
    res = CliRunner().invoke(app, ["train-curves", str(tmp_path), "--out", str(tmp_path / "fig")])
    assert res.exit_code == 2 and "not a tasksup training run" in res.output
    early = tmp_path / "early"  # stopped before its first logged step: config written, no metrics yet
    early.mkdir()
    shutil.copy(trained / "train_config.yaml", early / "train_config.yaml")
    res = CliRunner().invoke(app, ["train-curves", str(early), "--out", str(tmp_path / "fig")])
    assert res.exit_code == 2 and "stopped before its first logged step" in res.output
