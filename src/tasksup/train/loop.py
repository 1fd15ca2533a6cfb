"""`tasksup train CONFIG`: a GPT-2 (or a Llama-style decoder) trained from scratch on single-task sequences (§4, Eq. 1),
or on a corpus where a share of the sequences mixes tasks (``mix_share``: the stand-ins for pretrained LLMs).

The output directory always holds a loadable model (``save_pretrained`` safetensors + tokenizer),
so ``tasksup.load_model(out)`` and ``AutoModelForCausalLM.from_pretrained(out)`` both work::

    config.json, model.safetensors, tokenizer.json, ...   the model (latest checkpoint)
    train_config.yaml       the validated config, as run
    metrics.jsonl           {"step", "loss", "lr", "grad_norm", "elapsed_s"} and {"step", "eval": {...}} lines
    curves.png, curves.pdf  loss and per-task greedy accuracy against step (tasksup.train.curves)
    final_eval.json         exact top-1 single-task ICL accuracy per task, at the end
    train_summary.json      steps, wall time, parameters, package versions, the commands run
    COMMAND.txt             every command that wrote here, one per line
    resume/                 optimizer, scheduler and RNG state (safetensors + JSON) for --resume
    snapshots/step-NNNNNN/  loadable copies of the model along training (``snapshot_every``)

Runs under ``accelerate launch`` on any number of GPUs unchanged: each process draws its own slice
of every global batch.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from tasksup.errors import TasksupError
from tasksup.results import package_versions
from tasksup.tasks import Task, load_task_file, resolve_tasks
from tasksup.train.config import TrainConfig
from tasksup.train.curves import plot_curves, read_curves
from tasksup.train.data import (SequenceSource, example_lengths, family_chars, line_length, longest_example,
                                mixed_corpus, sampled_lines, task_probabilities)
from tasksup.train.evaluate import exact_accuracy, greedy_accuracy
from tasksup.train.state import STATE_DIR, has_state, load_state, save_state

CONFIG_FILE, METRICS_FILE = "train_config.yaml", "metrics.jsonl"
# Keys that may change when resuming without changing what the run computes.
RESUMABLE_KEYS = {"log_every", "eval_every", "eval_prompts", "final_eval_prompts", "save_every", "snapshot_every",
                  "cpu_threads"}
SNAPSHOT_DIR = "snapshots"
POSITION_ROUNDING = 64


def build_tokenizer(cfg: TrainConfig, tasks: Sequence[Task]):
    """Characters, or BPE merges learned from the examples the sequences are drawn from (``sampled_lines``:
    the same number of each task's, as every task has the same share of sequences by default)."""
    if cfg.tokenizer == "bpe":
        from tasksup.models.bpe_tokenizer import build_bpe_tokenizer

        return build_bpe_tokenizer(sampled_lines(tasks, cfg.delimiter, cfg.seed), cfg.vocab_size, cfg.extra_chars,
                                   cfg.bpe_digits)
    from tasksup.models import build_char_tokenizer

    return build_char_tokenizer(family_chars(tasks, cfg.delimiter, cfg.seed) + cfg.extra_chars)


def longest_sequence(cfg: TrainConfig, longest: int) -> int:
    """An upper bound on a training sequence's length in characters (and so in tokens), given the
    longest example with its delimiter (``longest_example``)."""
    if cfg.sequence_chars:
        return max(cfg.sequence_chars, 2 * longest)
    return longest * cfg.n_examples


def offset_room(cfg: TrainConfig) -> int:
    """Random offsets start a sequence anywhere in the context: they need twice the longest sequence."""
    return 2 if cfg.position_offset == "random" else 1


def context_length(cfg: TrainConfig, longest: int) -> int:
    if cfg.n_positions is not None:
        return cfg.n_positions
    return offset_room(cfg) * POSITION_ROUNDING * math.ceil(longest_sequence(cfg, longest) / POSITION_ROUNDING)


def build_llama(cfg: TrainConfig, tokenizer, n_positions: int):
    """A Llama-style decoder of the config's size: RoPE, RMSNorm, SwiGLU (hidden width 8/3 of n_embd, rounded up
    to a multiple of 8, as LLaMA), tied input and output embeddings as GPT-2."""
    from transformers import LlamaConfig, LlamaForCausalLM

    size = cfg.model_size()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=size["n_embd"], num_hidden_layers=size["n_layer"],
                         num_attention_heads=size["n_head"], intermediate_size=8 * math.ceil(size["n_embd"] / 3),
                         max_position_embeddings=n_positions, initializer_range=cfg.init_std,
                         attention_dropout=cfg.dropout, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def build_model(cfg: TrainConfig, tokenizer, n_positions: int, tasks: Sequence[Task] = ()):
    from transformers import GPT2Config, GPT2LMHeadModel

    if cfg.architecture == "llama":
        return build_llama(cfg, tokenizer, n_positions)
    size = cfg.model_size()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_layer=size["n_layer"],
                        n_head=size["n_head"], n_embd=size["n_embd"], resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                        attn_pdrop=cfg.dropout, initializer_range=cfg.init_std, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(config)
    if cfg.position_init == "sinusoidal":
        with torch.no_grad():
            wpe = model.transformer.wpe.weight
            wpe.copy_(sinusoidal_positions(*wpe.shape) * wpe.std() * math.sqrt(2))  # same scale as GPT-2's init
    elif cfg.position_init == "lines":
        if not tasks:
            raise ValueError("position_init: lines needs the tasks to find the line length")
        lead = len(tokenizer("", add_special_tokens=True)["input_ids"])  # a BOS token shifts every line
        with torch.no_grad():
            wpe = model.transformer.wpe.weight
            wpe.copy_(line_positions(*wpe.shape, line_length(tasks, cfg.delimiter, tokenizer, cfg.seed), lead, cfg.init_std))
    return model


def load_stage(cfg: TrainConfig, tasks: Sequence[Task]):
    """The tokenizer and model of ``cfg.init_from``, checked to cover this stage's characters."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from tasksup.models.loading import check_model_dir

    src = Path(cfg.init_from).expanduser()
    if not src.is_dir():
        raise TasksupError(f"init_from {cfg.init_from!r} is not a model directory")
    check_model_dir(str(src), cfg.init_from)
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src)
    except (OSError, ValueError, RuntimeError) as e:
        raise TasksupError(f"init_from {cfg.init_from!r} does not load as a tasksup-trained model: "
                           f"{str(e).strip().splitlines()[0]}") from None
    missing = sorted(set(family_chars(tasks, cfg.delimiter, cfg.seed)) - set(tokenizer.get_vocab()))
    if missing:
        raise TasksupError(f"init_from {cfg.init_from!r}: its tokenizer lacks characters these tasks write: "
                           f"{''.join(missing)!r}")
    return tokenizer, model


def check_stage_positions(cfg: TrainConfig, n_positions: int, longest: int, longest_tokens: int) -> None:
    """A stage's sequences fit its starting model's positions. In tokens, a sequence is at most its characters
    (``longest_sequence``) and at most n_examples of the longest example in tokens."""
    need = min(longest_sequence(cfg, longest), cfg.n_examples * longest_tokens) * offset_room(cfg)
    if need > n_positions:
        raise TasksupError(f"init_from {cfg.init_from!r} has {n_positions} positions; these sequences "
                           f"need {need} (lower n_examples)")


def line_positions(n: int, dim: int, length: int, lead: int, std: float) -> torch.Tensor:
    """Row p = A[(p - lead) mod length] + B[(p - lead) div length], A and B drawn N(0, std^2 / 2).

    Positions that share a place inside an example line start out alike, and so do positions of one
    line: "the k-th character of this line" is linear in the embedding from step 0. (Part of the
    recipe of checkpoints/ret-small, whose ln 8 plateau broke at 8 layers x 128; docs/training.md.)
    """
    p = torch.arange(n) - lead
    within, line = p.remainder(length), p.div(length, rounding_mode="floor") + 1  # line 0: tokens before line 1
    a = torch.randn(length, dim) * std / math.sqrt(2)
    b = torch.randn(int(line.max()) + 1, dim) * std / math.sqrt(2)
    return a[within] + b[line]


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    """Vaswani et al.'s position codes: a fixed linear map takes position p to p + k for every k,
    which makes attention by relative offset (the k-th character of this line) easy to learn."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    out = torch.zeros(n, dim)
    out[:, 0::2], out[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return out


def answer_loss(model, input_ids, targets, n_answers: int, position_ids=None, attention_mask=None) -> torch.Tensor:
    """Eq. 1: summed cross-entropy of the target tokens / the number of answers scored.

    An answer's cross-entropy is the sum over its tokens, so this is the mean over answers of
    -log P(answer | everything before it), as Eq. 1 writes it. Batches are right-padded and
    attention is causal, so padding never reaches a real token and no attention mask is passed
    (with one, SDPA on CPU leaves its fast path: 3x slower per step, measured). ``attention_mask`` is
    ``example_dropout``'s [b, 1, T, T] mask, the one case that needs it.
    """
    logits = model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask).logits[:, :-1]
    mask = targets[:, 1:]
    return F.cross_entropy(logits[mask].float(), input_ids[:, 1:][mask], reduction="sum") / n_answers


def _same_run(out: Path, cfg: TrainConfig) -> None:
    # a key added to TrainConfig after the run started counts as its default
    old = {**asdict(TrainConfig()), **yaml.safe_load((out / CONFIG_FILE).read_text())}
    new = asdict(cfg)
    changed = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_KEYS and old.get(k) != new.get(k))
    if changed:
        raise TasksupError(f"{out} was trained with a different config (differs in {', '.join(changed)}); "
                           "use another --out")


class _Log:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, stop_after: int | None = None,
          finish: bool = False, progress: bool = True) -> Path:
    """Train (or resume) into ``out``; returns ``out``. ``stop_after``: save and return at that step;
    ``finish``: there, also write what the end of the run writes (final eval, curves, summary)."""
    threads = torch.get_num_threads()
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        return _train(cfg, Path(out), resume, stop_after, finish, progress)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, out: Path, resume: bool, stop_after: int | None, finish: bool, progress: bool) -> Path:
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, get_cosine_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" at every checkpoint

    for f in cfg.task_files:
        load_task_file(f)
    tasks = resolve_tasks(cfg.tasks, one_space=False)
    task_probabilities(tasks, cfg.task_weights)  # unknown task names fail before anything is built,
    mixed_corpus(cfg, tasks)  # and a holdout that names them or leaves too few tasks to mix
    longest = longest_example(tasks, cfg.delimiter, cfg.seed)  # sizes the context and the eval prompts
    state_dir = out / STATE_DIR
    resuming = resume and has_state(state_dir)
    if resuming:
        _same_run(out, cfg)
    elif (out / "config.json").exists() or has_state(state_dir):
        raise TasksupError(f"{out} already holds a model: pass --resume to continue it, or choose another --out")

    try:
        accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    except ValueError as e:  # bf16/fp16 unsupported here, or a second precision in one process
        raise TasksupError(f"mixed_precision {cfg.mixed_precision!r}: {str(e).splitlines()[0]}") from None
    main = accelerator.is_main_process
    if cfg.batch_size % accelerator.num_processes:
        raise TasksupError(f"batch_size {cfg.batch_size} is not divisible by the {accelerator.num_processes} processes")
    per_process = cfg.batch_size // accelerator.num_processes
    if resuming:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(out)
    elif cfg.init_from:
        tokenizer, model = load_stage(cfg, tasks)
    else:
        tokenizer = build_tokenizer(cfg, tasks)
        model = build_model(cfg, tokenizer, context_length(cfg, longest), tasks)
    longest_tokens = max(example_lengths(tasks, cfg.delimiter, tokenizer, cfg.seed))  # one tokenization of the samples
    if cfg.init_from and not resuming:
        check_stage_positions(cfg, model.config.max_position_embeddings, longest, longest_tokens)
    source = SequenceSource.from_config(cfg, tasks, tokenizer, max_length=model.config.max_position_embeddings)
    eval_need = longest_tokens * (cfg.eval_m + 1)
    if eval_need > model.config.max_position_embeddings:
        raise TasksupError(f"eval prompts of {cfg.eval_m} examples may need {eval_need} tokens, more than the context of "
                           f"{model.config.max_position_embeddings}: lower eval_examples")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=tuple(cfg.adam_betas))
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    meta = {"step": 0, "elapsed_s": 0.0}
    if resuming:
        meta = load_state(state_dir, optimizer, scheduler)
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(out)
        (out / CONFIG_FILE).write_text(yaml.safe_dump(asdict(cfg), sort_keys=False, allow_unicode=True))
    if main:
        with (out / "COMMAND.txt").open("a") as f:
            f.write(shlex.join([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\n")
    log = _Log(out / METRICS_FILE, main)
    unwrapped = accelerator.unwrap_model(model)

    def checkpoint(step: int, elapsed: float) -> None:
        accelerator.wait_for_everyone()
        if main:
            unwrapped.save_pretrained(out)
            save_state(state_dir, optimizer, scheduler, {"step": step, "elapsed_s": elapsed})
            if cfg.snapshot_every and step % cfg.snapshot_every == 0:
                snapshot = out / SNAPSHOT_DIR / f"step-{step:06d}"
                unwrapped.save_pretrained(snapshot)
                tokenizer.save_pretrained(snapshot)

    def evaluate(step: int) -> None:
        if not main:  # every process holds the same weights; one evaluates
            return
        acc = greedy_accuracy(unwrapped, source, cfg.eval_m, cfg.eval_prompts)
        log.write({"step": step, "eval": acc, "eval_mean": sum(acc.values()) / len(acc), "eval_min": min(acc.values())})
        bar.write(f"step {step}: greedy accuracy min {min(acc.values()):.3f} mean {sum(acc.values()) / len(acc):.3f}")

    step, last_stop = meta["step"], min(cfg.steps, stop_after or cfg.steps)
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=not (progress and main))
    model.train()
    t0, elapsed0 = time.perf_counter(), meta["elapsed_s"]
    while step < last_stop:
        lo = accelerator.process_index * per_process
        batch = source.batch(step, range(lo, lo + per_process))
        positions = None if batch.position_ids is None else batch.position_ids.to(accelerator.device)
        mask = None if batch.attention_mask is None else batch.attention_mask.to(accelerator.device)
        with accelerator.autocast():
            loss = answer_loss(model, batch.input_ids.to(accelerator.device), batch.targets.to(accelerator.device),
                               batch.n_answers, positions, mask)
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        elapsed = elapsed0 + time.perf_counter() - t0
        if step % cfg.log_every == 0 or step == cfg.steps:
            loss_value = accelerator.reduce(loss.detach(), reduction="mean").item()
            bar.set_postfix(loss=f"{loss_value:.4f}")
            log.write({"step": step, "loss": loss_value, "lr": scheduler.get_last_lr()[0],
                       "grad_norm": float(grad_norm), "elapsed_s": round(elapsed, 2)})
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            evaluate(step)
        if (cfg.save_every and step % cfg.save_every == 0) or step == last_stop or \
                (cfg.snapshot_every and step % cfg.snapshot_every == 0):
            checkpoint(step, elapsed)
    bar.close()
    if (step >= cfg.steps or finish) and main:
        if step >= cfg.steps or not (cfg.eval_every and step % cfg.eval_every == 0):  # else logged at this step
            evaluate(step)
        _finish(cfg, out, source, unwrapped, tokenizer, step, elapsed0 + time.perf_counter() - t0, progress)
    accelerator.wait_for_everyone()
    return out


def _finish(cfg: TrainConfig, out: Path, source: SequenceSource, model, tokenizer, step: int, elapsed: float,
            progress: bool) -> None:
    from tasksup.models import LanguageModel

    summary = {"steps": step, "scheduled_steps": cfg.steps, "train_wall_s": round(elapsed, 1),
               "n_parameters": int(sum(p.numel() for p in model.parameters())),
               "n_positions": model.config.max_position_embeddings, "vocab_size": model.config.vocab_size,
               "architecture": model.config.model_type,
               "model_size": {k: getattr(model.config, name) for k, name in
                              (("n_layer", "num_hidden_layers"), ("n_head", "num_attention_heads"), ("n_embd", "hidden_size"))},
               "init_from": cfg.init_from, "versions": package_versions()}
    if cfg.final_eval_prompts:
        t0 = time.perf_counter()
        lm = LanguageModel(model.eval(), tokenizer, name=str(out))
        bar = tqdm(total=len(source.tasks), desc="final eval (exact top-1)", disable=not progress)
        acc = exact_accuracy(lm, source, cfg.eval_m, cfg.final_eval_prompts, bar)
        bar.close()
        final = {"method": "exact top-1 output (LanguageModel.top_outputs, k=1, stop=delimiter)",
                 "n_prompts_per_task": cfg.final_eval_prompts, "n_examples": cfg.eval_m, "seed": cfg.seed,
                 "per_task": acc, "min": min(acc.values()), "mean": sum(acc.values()) / len(acc),
                 "eval_wall_s": round(time.perf_counter() - t0, 1)}
        (out / "final_eval.json").write_text(json.dumps(final, indent=2) + "\n")
        summary["final_eval_min"] = final["min"]
        tqdm.write(f"final exact top-1 accuracy: min {final['min']:.3f} mean {final['mean']:.3f} over "
                   f"{len(acc)} tasks ({cfg.final_eval_prompts} prompts each)")
    curves = read_curves(out)
    summary["break_step"] = curves.break_step()
    plot_curves([curves], out / "curves", title=f"{out.name}: {', '.join(t.name for t in source.tasks)}")
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
