"""`make demo`: Fig. 3 on the two embedded one-task checkpoints (ret-small, plus-small) and the four Fig. 2
settings on fig2-small, our stand-in for a pretrained LLM (trained on a mixed corpus), offline.

Runs ``configs/fig3_ret.yaml`` and ``configs/fig3_plus.yaml`` as they are (the paper's 100 prompts per
lambda: about 10 s per model on one CPU core) and ``configs/fig2_*_small.yaml`` with fewer prompts
(``FIG2_PROMPTS``), prints a table per run and a verdict line (does the model superpose inside a
prompt, or on average only? :func:`fig3_verdict`, :func:`fig2_verdict`) and writes the figures and
results to ``results/demo/``.
The same runs by hand: ``tasksup run configs/fig3_ret.yaml``, ``tasksup run configs/fig2_country_small.yaml``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from tasksup.errors import TasksupError

REPO = Path(__file__).resolve().parents[2]  # the source checkout (the package is installed editable)
OUT = REPO / "results" / "demo"
DEMOS = [("Fig. 3a", "configs/fig3_ret.yaml", "checkpoints/ret-small"),
         ("Fig. 3b", "configs/fig3_plus.yaml", "checkpoints/plus-small")]
FIG2_MODEL = "checkpoints/fig2-small"
FIG2 = [("Fig. 2a", "configs/fig2_add_translate_small.yaml"), ("Fig. 2b", "configs/fig2_country_small.yaml"),
        ("Fig. 2c", "configs/fig2_copy_add_small.yaml"), ("Fig. 2d", "configs/fig2_letters_small.yaml")]
FIG2_PROMPTS = 40  # of the configs' 100: the demo's time budget


# Inside a prompt or on average only: the numbers each figure's verdict line is decided by.
MEDIAN_BOTH = 0.2  # Fig. 3: at lambda = 0.5 both medians of P(A) and P(B) at least this: superposed inside a prompt
MEAN_RANGE = (0.3, 0.7)  # Fig. 3, on average (the acceptance in docs/walkthrough.md): both means at lambda = 0.5 in this range,
MIN_MEAN_SUM = 0.9  # mean P(A) + P(B) at least this at every lambda,
MIN_PEARSON = 0.97  # and Pearson r(mean P(A), lambda) at least this
FIG2_MEDIAN = 0.1  # Fig. 2 (the paper's criterion): >= 2 tasks with a median probability above this


def table(summary: dict) -> str:
    a, b = summary["tasks"]
    lines = [f"{'lambda':>6}  {'P(' + a + ')':>9}  {'P(' + b + ')':>9}  {'other':>7}"]
    for e in summary["per_lambda"]:
        lines.append(f"{e['lambda']:>6.1f}  {e[a]['mean']:>9.3f}  {e[b]['mean']:>9.3f}  {e['other']['mean']:>7.3f}")
    lines.append(f"Pearson r(mean P({a}), lambda) = {summary['pearson_mean_a_vs_lambda']:.3f}; "
                 f"min over lambda of mean P({a}) + P({b}) = {summary['min_mean_sum']:.3f}")
    return "\n".join(lines)


def _shares(choice: dict | None) -> str:
    if not choice:
        return "no prompt holds examples of two tasks"
    return (f"{choice['committed']:.0%} of {choice['n_prompts']} prompts committed (>= {choice['threshold']:.0%} of the "
            f"tasks' probability on one task), {choice['follows_example_1']:.0%} follow example 1's task")


def fig3_verdict(summary: dict) -> str:
    """One line: does the model superpose A and B inside a prompt, on average only, or not at all?

    Inside a prompt: at lambda = 0.5 (the nearest lambda run) both medians of P(A) and P(B) are
    >= ``MEDIAN_BOTH``. Else on average only, if the mean criteria hold (``MEAN_RANGE``,
    ``MIN_MEAN_SUM``, ``MIN_PEARSON``); else neither.
    """
    a, b = summary["tasks"]
    e = min(summary["per_lambda"], key=lambda x: abs(x["lambda"] - 0.5))
    med_a, med_b = e[a]["median"], e[b]["median"]
    mean_a, mean_b = e[a]["mean"], e[b]["mean"]
    pearson = summary["pearson_mean_a_vs_lambda"]
    inside = min(med_a, med_b) >= MEDIAN_BOTH
    in_range = all(MEAN_RANGE[0] <= m <= MEAN_RANGE[1] for m in (mean_a, mean_b))
    calibrated = pearson is not None and pearson >= MIN_PEARSON
    means_hold = in_range and summary["min_mean_sum"] >= MIN_MEAN_SUM and calibrated
    verdict = ("superposes INSIDE a prompt" if inside else "superposes ON AVERAGE ONLY" if means_hold
               else "does NOT superpose, not even on average")
    return (f"verdict: {verdict}. At lambda = {e['lambda']:g}: median P({a}) = {med_a:.2f}, median P({b}) = {med_b:.2f} "
            f"(both >= {MEDIAN_BOTH}: {_yes(inside)}); means {mean_a:.2f}, {mean_b:.2f} (in [{MEAN_RANGE[0]}, "
            f"{MEAN_RANGE[1]}]: {_yes(in_range)}); {_shares(e.get('per_prompt'))}. Min over lambda of mean P({a}) + "
            f"P({b}) {summary['min_mean_sum']:.2f} (>= {MIN_MEAN_SUM}: {_yes(summary['min_mean_sum'] >= MIN_MEAN_SUM)}), "
            f"Pearson " + ("n/a" if pearson is None else f"{pearson:.3f}") + f" (>= {MIN_PEARSON}: {_yes(calibrated)})")


def fig2_verdict(summary: dict) -> str:
    """One line: inside a prompt when >= 2 tasks have a median probability > ``FIG2_MEDIAN`` (the paper's
    criterion); else on average only when >= 2 tasks have a mean above it; else one task only."""
    tasks = summary["tasks"]
    by_median = [t for t in tasks if summary["per_task"][t]["median"] > FIG2_MEDIAN]
    by_mean = [t for t in tasks if summary["per_task"][t]["mean"] > FIG2_MEDIAN]
    verdict = ("superposes INSIDE a prompt" if len(by_median) >= 2 else "superposes ON AVERAGE ONLY"
               if len(by_mean) >= 2 else "puts its mass on ONE task, even on average")
    return (f"verdict: {verdict}. Tasks with median P > {FIG2_MEDIAN}: {len(by_median)} of {len(tasks)} (needs 2), "
            f"with mean P > {FIG2_MEDIAN}: {len(by_mean)}; {_shares(summary.get('per_prompt'))}")


def _yes(condition: bool) -> str:
    return "yes" if condition else "no"


def box_table(summary: dict) -> str:
    """Fig. 2's box plot as numbers: quartiles of each task's probability and of ``other``."""
    rows = [(name, summary["per_task"][name]) for name in summary["tasks"]] + [("other", summary["other"])]
    lines = [f"{'':>17}  {'q1':>6}  {'median':>6}  {'q3':>6}  {'mean':>6}"]
    lines += [f"{name:>17}  {q['q1']:>6.3f}  {q['median']:>6.3f}  {q['q3']:>6.3f}  {q['mean']:>6.3f}" for name, q in rows]
    return "\n".join(lines)


def run(config: str, model: str, out: Path, overrides: list[str] | None = None):
    from tasksup.runner import run_config

    if not (REPO / model / "config.json").is_file():
        raise SystemExit(f"tasksup demo: {REPO / model} is missing (the demo needs the repository checkout)")
    shutil.rmtree(out, ignore_errors=True)  # always recompute: the checkpoint may have changed
    try:
        return run_config(REPO / config, model=str(REPO / model), out=out, overrides=overrides, progress=False)
    except TasksupError as e:
        raise SystemExit(f"tasksup demo: {e}") from None


def main() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the tables are the demo's output
    t0 = time.perf_counter()
    for label, config, model in DEMOS:
        run_dir = run(config, model, OUT / Path(config).stem)
        summary = json.loads((run_dir.path / "summary.json").read_text())
        n_prompts = summary["per_lambda"][0]["n_prompts"]
        print(f"\n{label}  {model}: mean over {n_prompts} prompts per lambda, m = {summary['n_examples']} examples")
        print(table(summary))
        print(fig3_verdict(summary))
        print(f"figure: {run_dir.path / 'fig3.png'}")
    for label, config in FIG2:
        run_dir = run(config, FIG2_MODEL, OUT / Path(config).stem, [f"n_prompts={FIG2_PROMPTS}"])
        summary = json.loads((run_dir.path / "summary.json").read_text())
        m = json.loads((run_dir.path / "config.json").read_text()).get("n_examples")
        print(f"\n{label}  {FIG2_MODEL} (our stand-in for an LLM, not an LLM): P(answer) over {summary['n_prompts']} "
              f"uniform-mixture prompts, m = {m} examples")
        print(box_table(summary))
        print(fig2_verdict(summary))
        print(f"figure: {run_dir.path / 'fig2.png'}")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s (results and figures in {OUT})")
    print("ret-small and plus-small, trained one task per sequence (Eq. 1), reproduce Fig. 3a and 3b in the mean over\n"
          "prompts, by answering each prompt with the task of its first example: README.md, 'Gallery'; the recipes in\n"
          "checkpoints/ret-small and checkpoints/plus-small. fig2-small is trained like an LLM, on a corpus where some\n"
          "sequences mix tasks, none of them three or four of one setting: every Figure-2 mixture above is new to it. It\n"
          "spreads its probability over several tasks inside each prompt: docs/llm_stand_ins.md. The verdict lines'\n"
          "criteria: docs/summaries.md.")


if __name__ == "__main__":
    main()
