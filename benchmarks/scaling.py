"""Fig. 6 protocol benchmark (issue 5: one ~10M-parameter model in <= 5 minutes on 2 CPU cores).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scaling.py --model /tmp/bench/checkpoints/numeric6-m \\
        --widen 5 --extra-layers 2

(/tmp/bench/checkpoints/numeric6-m: ``git archive 2f87062 checkpoints/numeric6-m | tar -x -C /tmp/bench``,
the first numeric6-m, whose 576 positions hold the protocol's m = 60 prompts; docs/scaling.md.)

Times the whole protocol of ``configs/fig6_scaling.yaml`` (3 distributions x 100 prompts, exact answer
scores and exact top-6, JSONL written) exactly as ``tasksup run`` runs it, then, in the same run, on
the first ``--baseline-prompts`` prompts of every distribution:

- ``separate``: ``lm.score`` (prompts batched) and then ``lm.search`` per prompt, so every prompt
  runs through the network twice (what ``score_record`` did before ``score_and_search``);
- ``shared``: ``lm.score_and_search``, one prompt pass for both (what the protocol uses);
- ``floor``: one forward pass over each prompt and nothing else.

``--widen F --extra-layers N`` first grows the trained model into an F-times wider, N-layers deeper
GPT-2 computing the same function (``tasksup.models.widen``): numeric6-m (288k) becomes a
5-layer, 400-wide, 20-head GPT-2 of 9.94M parameters with the trained model's search trees
(numeric6-l with ``--widen 3 --extra-layers 1``: 6 layers, 384 wide, 10.9M).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from tasksup.cliutil import App
from tasksup.config import to_dict
from tasksup.experiments import mixture
from tasksup.results import RunDir
from tasksup.runner import prepare
from tasksup.tasks import PromptBuilder, resolve_tasks

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 300.0
app = App(add_completion=False)


def grown_copy(model_dir: Path, widen: int, extra_layers: int, dest: Path) -> tuple[Path, float]:
    """Save the widened model next to the original tokenizer; returns (folder, max |logit difference|)."""
    import torch
    from transformers import GPT2LMHeadModel

    from tasksup.models.loading import load_tokenizer
    from tasksup.models.widen import widen_gpt2

    small = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    big = widen_gpt2(small, widen, extra_layers)
    big.save_pretrained(dest)
    tok = load_tokenizer(str(model_dir))
    tok.save_pretrained(dest)
    ids = torch.tensor([tok("12->13\n45->46\n77->")["input_ids"]])
    with torch.no_grad():
        diff = (small(ids).logits - big(ids).logits).abs().max().item()
    return dest, diff


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


@app.command()
def main(model: Path = typer.Option(..., help="A GPT-2 checkpoint folder (e.g. checkpoints/numeric6-l)."),
         widen: int = typer.Option(1, help="Grow the model this many times wider first (function-preserving)."),
         extra_layers: int = typer.Option(0, help="... and append this many identity layers."),
         config: Path = typer.Option(ROOT / "configs" / "fig6_scaling.yaml", help="The protocol."),
         n_prompts: Optional[int] = typer.Option(None, help="Prompts per distribution (default: the config's)."),
         baseline_prompts: int = typer.Option(10, help="Prompts per distribution for the baselines."),
         as_json: bool = typer.Option(False, "--json", help="Print one JSON line.")):
    """Time the Fig. 6 protocol on one model and compare with the separate-pass baseline."""
    import torch

    from tasksup.models import load_model
    from tasksup.scoring import prompt_pass

    source = model
    with tempfile.TemporaryDirectory() as tmp:
        logit_diff = None
        if widen > 1 or extra_layers > 0:
            model, logit_diff = grown_copy(model, widen, extra_layers, Path(tmp) / "grown")
        overrides = [f"n_prompts={n_prompts}"] if n_prompts else []
        experiment, cfg = prepare(config, model=str(model), overrides=overrides)
        lm = load_model(str(model), device="cpu", batch_size=cfg.batch_size)
        n_parameters = lm.identity()["n_parameters"]
        run_dir = RunDir(Path(tmp) / "run", to_dict(cfg), seed=cfg.seed, model=lm.identity())
        searches = []
        shared_call = lm.score_and_search

        def counting(*args, **kwargs):  # keep the search statistics of the protocol run
            scores, found = shared_call(*args, **kwargs)
            searches.extend(found)
            return scores, found

        lm.score_and_search = counting
        _, protocol_s = timed(lambda: experiment.run(cfg, lm, run_dir, progress=False))
        lm.score_and_search = shared_call
        records = run_dir.records()

        builder = PromptBuilder(resolve_tasks(cfg.tasks), cfg.delimiter)
        prompts = []
        for name in cfg.distributions:
            mcfg = experiment.member_config(cfg, name)
            prompts += [mixture.build_prompt(mcfg, builder, i) for i in range(baseline_prompts)]
        texts, answers = [p.text for p in prompts], [p.answers for p in prompts]
        search_args = dict(k=mcfg.top_k, stop=cfg.delimiter, max_tokens=cfg.top_max_tokens)

        def separate():
            scores = [lm.score(texts[i:i + cfg.batch_size], answers[i:i + cfg.batch_size], cfg.terminator,
                               cfg.tokenization) for i in range(0, len(texts), cfg.batch_size)]
            return np.concatenate([s.logprobs for s in scores]), [lm.search(t, **search_args) for t in texts]

        def floor():
            with torch.inference_mode():
                for t in texts:
                    prompt_pass(lm.model, lm.encode(t))

        (sep_lp, sep_found), separate_s = timed(separate)
        (shared_scores, shared_found), shared_s = timed(
            lambda: lm.score_and_search(texts, answers, cfg.terminator, cfg.tokenization, **search_args))
        _, floor_s = timed(floor)
        same = (np.allclose(sep_lp, shared_scores.logprobs, rtol=1e-5)
                and all([o for o, _ in a.outputs] == [o for o, _ in b.outputs] for a, b in zip(sep_found, shared_found)))

    n = len(records)
    result = {
        "model": str(source) if logit_diff is None else f"{source} widened x{widen} + {extra_layers} layers",
        "n_parameters": n_parameters, "widen": widen, "extra_layers": extra_layers,
        "max_logit_diff_vs_original": logit_diff, "prompt_tokens_mean": float(np.mean([len(lm.encode(t)) for t in texts])),
        "protocol_prompts": n, "protocol_s": round(protocol_s, 1), "target_s": TARGET_S,
        "protocol_over_target": round(protocol_s / TARGET_S, 3), "per_prompt_ms": round(1000 * protocol_s / n, 1),
        "search_expansions_mean": float(np.mean([s.expansions for s in searches])),
        "search_forward_tokens_mean": float(np.mean([s.forward_tokens for s in searches])),
        "mean_r": float(np.mean([r["r"] for r in records])),
        "baseline_prompts": len(texts), "separate_s": round(separate_s, 2), "shared_s": round(shared_s, 2),
        "separate_over_shared": round(separate_s / shared_s, 2), "floor_s": round(floor_s, 2),
        "shared_over_floor": round(shared_s / floor_s, 2), "shared_equals_separate": bool(same),
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{result['model']} ({result['n_parameters'] / 1e6:.2f}M parameters, "
               f"{result['prompt_tokens_mean']:.0f}-token prompts)")
    typer.echo(f"protocol: {n} prompts in {protocol_s:.1f} s = {result['protocol_over_target']:.2f} x the "
               f"{TARGET_S:.0f} s target ({result['per_prompt_ms']:.0f} ms a prompt; "
               f"{result['search_expansions_mean']:.1f} search expansions a prompt; mean r {result['mean_r']:.2f})")
    typer.echo(f"same {len(texts)} prompts: separate passes {separate_s:.2f} s, shared pass {shared_s:.2f} s "
               f"(x{result['separate_over_shared']:.2f}), prompt passes alone {floor_s:.2f} s "
               f"(shared = x{result['shared_over_floor']:.2f} the floor); identical results: {same}")


if __name__ == "__main__":
    app()
