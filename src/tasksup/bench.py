"""`tasksup bench scoring`: our exact scorer and top-k search against the released code's method.

Both run on the same model in the same process, interleaved, on the same prompts; the ratios are
medians over repeats. The *reference* scorer is the paper's released method: for every answer one
forward pass over the jointly tokenized prompt + answer with full logits, log-softmax, sum of the
answer tokens. The *reference* top-k is a beam search of width k that re-runs the whole prompt for
every beam at every step. Peak memory is measured per method in a fresh child process (peak RSS
increase on CPU; ``torch.cuda.max_memory_allocated`` on CUDA).

The default model is a random GPT-2 (6 layers, width 256, at its plain random init) on the real
GPT-2 vocabulary (:func:`tasksup.testing.real_vocab_dir`, fetched once per machine; ``--vocab char``
without it).
Such a model's next-token distribution is near-uniform over 50k tokens, under which neither an exact
search nor a beam is meaningful (it never emits the delimiter); so, per prompt, the bench adds a fixed
logit bias (:data:`ANSWER_BIAS`) to the tokens of that prompt's K answers and of the delimiter: like
a trained model in superposition, it then spreads its mass over the answers' tokens and ends outputs
with the delimiter. ``--model DIR`` benchmarks any causal LM instead, unmodified.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasksup.errors import TasksupError
from tasksup.scoring import OutputReader

ANSWER_BIAS = 12.0  # logit bonus of the current prompt's answer and delimiter tokens (see module doc)
FAMILIES = {4: "add_translate", 6: "numeric6"}  # K -> the family whose mixture prompts are scored
BARE_REPEAT_FACTOR = 4  # ours / bare is a small difference of two close times: that pairing repeats 4x as often
# (measured: over 5 repeats the median ratio moved 1.13-1.31 between runs, over 21 1.14-1.17)


@dataclass
class BenchSetup:
    model: str | None = None  # a causal LM to benchmark as is; default: the random bench GPT-2
    layers: int = 6
    width: int = 256
    heads: int = 8
    prompt_tokens: int = 750  # each mixture prompt gets as many examples as make about this many tokens
    n_prompts: int = 3
    repeats: int = 5
    top_k: int = 6
    top_max_tokens: int = 8
    vocab: str = "gpt2"  # gpt2 (the real vocabulary, cached) | char
    seed: int = 0
    device: str | None = None
    threads: int | None = None  # torch CPU threads (default: torch's choice)


# -- the model and the prompts ---------------------------------------------------------------------


def _tokenizer(vocab: str):
    from tasksup.models.char_tokenizer import build_char_tokenizer

    if vocab == "char":
        return build_char_tokenizer("áéíóúüñçèàâêô")
    if vocab != "gpt2":
        raise TasksupError(f"--vocab must be gpt2 or char, got {vocab!r}")
    from transformers import AutoTokenizer

    from tasksup.testing import real_vocab_dir

    try:
        return AutoTokenizer.from_pretrained(str(real_vocab_dir("gpt2")))
    except Exception as e:  # offline without a cached copy: say so rather than silently change vocabularies
        raise TasksupError(f"the GPT-2 vocabulary is not available ({type(e).__name__}); use --vocab char") from None


def build_model(setup: BenchSetup, path: Path) -> Path:
    from tasksup.testing import save_tiny_model

    return save_tiny_model(path, "gpt2", _tokenizer(setup.vocab), seed=setup.seed, sharpen=1.0, layers=setup.layers,
                           width=setup.width, heads=setup.heads, context=max(1024, setup.prompt_tokens + 64))


def load_bench_model(model_dir: str, setup: BenchSetup):
    from tasksup.models import load_model

    lm = load_model(model_dir, device=setup.device)
    lm.model.requires_grad_(False)
    return lm


def bias_towards(lm, strings) -> None:
    """The bench model's logit bias: :data:`ANSWER_BIAS` on every token of ``strings`` (see module doc)."""
    head = lm.model.get_output_embeddings()
    bias = torch.zeros(head.weight.shape[0], device=head.weight.device, dtype=head.weight.dtype)
    bias[sorted({t for s in strings for t in lm.encode_bare(s)})] = ANSWER_BIAS
    head.bias = torch.nn.Parameter(bias, requires_grad=False)


def bench_prompts(lm, k: int, setup: BenchSetup) -> list:
    """``n_prompts`` mixture prompts of the K-task family, each of about ``prompt_tokens`` tokens."""
    from tasksup.tasks import PromptBuilder, resolve_tasks

    builder = PromptBuilder(resolve_tasks(FAMILIES[k]))
    prompts = []
    for i in range(setup.n_prompts):
        m = 40
        for _ in range(3):  # m proportional to the wanted length converges in two or three builds
            p = builder.build("uniform", m, np.random.default_rng([setup.seed, i]))
            m = max(k, round(m * setup.prompt_tokens / len(lm.encode(p.text))))
        prompts.append(p)
    return prompts


# -- the reference methods (what the paper's released code does) -----------------------------------


@torch.inference_mode()
def reference_logprobs(lm, prompt: str, answers: list[str]) -> np.ndarray:
    """One forward of tok(prompt + answer) per answer, full logits and log-softmax; sum of answer tokens."""
    device = next(lm.model.parameters()).device
    n_prompt = len(lm.encode(prompt))
    out = []
    for a in answers:
        ids = lm.encode(prompt + a)
        logp = torch.log_softmax(lm.model(torch.tensor([ids], device=device)).logits[0].float(), dim=-1)
        out.append(float(sum(logp[i - 1, ids[i]] for i in range(n_prompt, len(ids)))))
    return np.array(out)


@torch.inference_mode()
def reference_beam(lm, prompt: str, k: int, stop: str, max_tokens: int) -> list[tuple[str, float]]:
    """Beam search of width k without a cache: every beam re-runs the whole prompt at every step."""
    device = next(lm.model.parameters()).device
    prompt_ids = lm.encode(prompt)
    reader = OutputReader(lm.tokenizer, prompt_ids, stop, lm.eos_ids)
    beams, finished = [((), 0.0)], {}
    for _ in range(max_tokens):
        candidates = []
        for path, logp in beams:
            logits = lm.model(torch.tensor([prompt_ids + list(path)], device=device)).logits[0, -1]
            top = torch.topk(torch.log_softmax(logits.float(), dim=-1), k)
            candidates += [(path + (int(t),), logp + float(v)) for v, t in zip(top.values, top.indices)]
        beams = []
        for path, logp in sorted(candidates, key=lambda c: -c[1])[:k]:
            text = reader.complete(path)
            if text is not None:
                finished.setdefault(text, math.exp(logp))
            else:
                beams.append((path, logp))
        if not beams or len(finished) >= k:
            break
    return sorted(finished.items(), key=lambda kv: -kv[1])[:k]


@torch.inference_mode()
def bare_forward(lm, prompt_ids: list[int]) -> None:
    """The physical limit of scoring a prompt by this method: one forward of the (already tokenized) prompt,
    with a KV cache and the last position's logits only, and nothing else."""
    from tasksup.scoring import _forward

    device = next(lm.model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    _forward(lm.model, ids, torch.ones_like(ids), torch.arange(ids.shape[1], device=device)[None], keep_last_only=True)


def one_node_search(lm, prompt: str, k: int, stop: str, max_tokens: int):
    """The exact search expanding one node per forward (``batch=1``, the search before batching)."""
    from tasksup.scoring import best_first_outputs

    return best_first_outputs(lm.model, lm.tokenizer, lm.encode(prompt), k, stop, max_tokens, lm.eos_ids, batch=1)


# -- measuring ---------------------------------------------------------------------------------------


def _seconds(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def _paired_medians(ours, reference, repeats: int) -> tuple[float, float]:
    """Median seconds of two callables, run alternately (after one warm-up each), so drift hits both."""
    ours(), reference()
    a, b = [], []
    for _ in range(repeats):
        a.append(_seconds(ours))
        b.append(_seconds(reference))
    return statistics.median(a), statistics.median(b)


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(field)


def _peak_child(model_dir: str, setup: BenchSetup, method: str, prompt: str, answers: list[str], queue) -> None:
    """In a fresh process: load the model, then the peak memory increase of one run of ``method``."""
    import gc
    import resource

    if setup.threads:
        torch.set_num_threads(setup.threads)
    lm = load_bench_model(model_dir, setup)
    if setup.model is None:
        bias_towards(lm, answers + ["\n"])
    run = {"ours": lambda: lm.answer_logprobs(prompt, answers),
           "reference": lambda: reference_logprobs(lm, prompt, answers)}[method]
    lm.answer_logprobs("1+2->", ["3"])  # one-time set-up (thread pools, kernels) is not the method's memory
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        queue.put((torch.cuda.max_memory_allocated() - before) / 2**20)
        return
    try:  # reset the kernel's peak-RSS mark (Linux), so that model loading does not hide the method's peak
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss_mb("VmRSS")
        run()
        queue.put(_rss_mb("VmHWM") - before)
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        run()
        queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)


def peak_mb(model_dir: str, setup: BenchSetup, method: str, prompt: str, answers: list[str]) -> float:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_child, args=(model_dir, setup, method, prompt, answers, queue))
    proc.start()
    value = queue.get(timeout=600)
    proc.join()
    return float(value)


def run_scoring_bench(setup: BenchSetup, progress=print) -> dict:
    """Everything ``tasksup bench scoring`` measures, as a dict (the JSON it prints): one row per thread count,
    ``--threads`` or else 1 and torch's default (the machine's cores), in this one invocation."""
    default = torch.get_num_threads()
    counts = [setup.threads] if setup.threads else sorted({1, default})
    rows = []
    for threads in counts:
        progress(f"-- {threads} thread(s)")
        rows.append(_scoring_row(dataclasses.replace(setup, threads=threads), progress))
    torch.set_num_threads(default)
    return {"model": rows[0]["model"], "device": rows[0]["device"], "rows": rows}


def _scoring_row(setup: BenchSetup, progress) -> dict:
    torch.set_num_threads(setup.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = setup.model or str(build_model(setup, Path(tmp) / "model"))
        lm = load_bench_model(model_dir, setup)

        def prepare(p) -> None:  # the random bench model leans towards this prompt's answers
            if setup.model is None:
                bias_towards(lm, p.answers + ["\n"])

        name = setup.model or f"random gpt2 {setup.layers}x{setup.width}, {setup.vocab} vocabulary"
        result = {"model": f"{name} ({len(lm.tokenizer)} tokens)", "device": str(next(lm.model.parameters()).device),
                  "threads": torch.get_num_threads()}
        prompts = {k: bench_prompts(lm, k, setup) for k in FAMILIES}
        result["prompt_tokens"] = [len(lm.encode(p.text)) for p in prompts[4]]
        max_diff = 0.0
        for k, ps in prompts.items():
            ours_t, ref_t, bare_t, ours_vs_bare = [], [], [], []
            for p in ps:
                prepare(p)
                ours, ref = lm.answer_logprobs(p.text, p.answers)[0], reference_logprobs(lm, p.text, p.answers)
                max_diff = max(max_diff, float(np.abs(ours - ref).max()))
                o, r = _paired_medians(lambda: lm.answer_logprobs(p.text, p.answers),
                                       lambda: reference_logprobs(lm, p.text, p.answers), setup.repeats)
                ids = lm.encode(p.text)
                o2, b = _paired_medians(lambda: lm.answer_logprobs(p.text, p.answers), lambda: bare_forward(lm, ids),
                                        BARE_REPEAT_FACTOR * setup.repeats)
                ours_t.append(o)
                ref_t.append(r)
                bare_t.append(b)
                ours_vs_bare.append(o2 / b)
            result[f"ours_ms_k{k}"] = 1000 * statistics.median(ours_t)
            result[f"reference_ms_k{k}"] = 1000 * statistics.median(ref_t)
            result[f"speedup_k{k}"] = statistics.median(ref_t) / statistics.median(ours_t)
            result[f"bare_ms_k{k}"] = 1000 * statistics.median(bare_t)
            result[f"ours_over_bare_k{k}"] = statistics.median(ours_vs_bare)
            progress(f"scoring K={k}: ours {result[f'ours_ms_k{k}']:.1f} ms, released method "
                     f"{result[f'reference_ms_k{k}']:.1f} ms per prompt -> {result[f'speedup_k{k}']:.2f}x; "
                     f"one bare prompt forward {result[f'bare_ms_k{k}']:.1f} ms -> ours / bare "
                     f"{result[f'ours_over_bare_k{k}']:.2f}")
        result["max_abs_logprob_diff"] = max_diff

        ours_t, ref_t, one_t, expansions, forwards, overlap, same, rel, gap = [], [], [], [], [], [], True, 0.0, 0.0
        for p in prompts[4]:  # one timed run each: the uncached beam takes seconds, its noise is small
            prepare(p)
            args = (p.text, setup.top_k, "\n", setup.top_max_tokens)
            found, beam, one = [], [], []
            ours_t.append(_seconds(lambda: found.append(lm.search(*args))))
            one_t.append(_seconds(lambda: one.append(one_node_search(lm, *args))))
            ref_t.append(_seconds(lambda: beam.extend(reference_beam(lm, *args))))
            expansions.append(found[0].expansions)
            forwards.append(found[0].forwards)
            overlap.append(len({o for o, _ in found[0].outputs} & {o for o, _ in beam}))
            same &= [o for o, _ in found[0].outputs] == [o for o, _ in one[0].outputs]
            pairs = list(zip(found[0].outputs, one[0].outputs))
            rel = max(rel, max((abs(a / b - 1) for (_, a), (_, b) in pairs), default=0))
            gap = max(gap, max((abs(a - b) for (_, a), (_, b) in pairs), default=0))
        result["topk_ours_ms"] = 1000 * statistics.median(ours_t)
        result["topk_reference_ms"] = 1000 * statistics.median(ref_t)
        result["topk_speedup"] = statistics.median(ref_t) / statistics.median(ours_t)
        result["topk_one_node_ms"] = 1000 * statistics.median(one_t)
        result["topk_expansions"] = expansions
        result["topk_forwards"] = forwards
        result["topk_same_as_one_node_search"] = same
        result["topk_max_rel_prob_diff"] = rel
        result["topk_max_abs_prob_diff"] = gap
        result["topk_shared_with_beam"] = overlap
        progress(f"top-{setup.top_k}: ours {result['topk_ours_ms']:.0f} ms ({expansions} expansions in {forwards} "
                 f"forwards), one node per forward {result['topk_one_node_ms']:.0f} ms, uncached beam "
                 f"{result['topk_reference_ms']:.0f} ms -> {result['topk_speedup']:.1f}x; outputs equal to the "
                 f"one-node search: {same} (probabilities within {gap:.1e}, {rel:.1e} relative)")

        p = prompts[4][0]
        result["peak_mb_ours"] = peak_mb(model_dir, setup, "ours", p.text, p.answers)
        result["peak_mb_reference"] = peak_mb(model_dir, setup, "reference", p.text, p.answers)
        progress(f"peak memory, K=4, fresh process each: ours {result['peak_mb_ours']:.1f} MB, released method "
                 f"{result['peak_mb_reference']:.1f} MB")
    return result


def scoring_command(json_out: bool, setup: BenchSetup) -> None:
    import typer

    result = run_scoring_bench(setup, progress=typer.echo)
    typer.echo(f"{'threads':>7}  {'K=4 vs released':>15}  {'K=6 vs released':>15}  {'K=4 / bare':>10}  "
               f"{'K=6 / bare':>10}  {'top-6 vs beam':>13}")
    for r in result["rows"]:
        typer.echo(f"{r['threads']:>7}  {r['speedup_k4']:>14.1f}x  {r['speedup_k6']:>14.1f}x  {r['ours_over_bare_k4']:>10.2f}  "
                   f"{r['ours_over_bare_k6']:>10.2f}  {r['topk_speedup']:>12.1f}x")
    if json_out:
        typer.echo(json.dumps(result))
