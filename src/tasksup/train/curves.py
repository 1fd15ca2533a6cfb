"""Training curves of one or more runs (``metrics.jsonl``): loss and per-task greedy accuracy per step.

``tasksup train-curves RUN [RUN ...]`` draws them side by side (e.g. a recipe against its control) and
prints, per run, where the in-context plateau broke: the first evaluation whose mean single-task
greedy accuracy reaches ``BREAK_ACCURACY``. Every finished training writes its own ``curves.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tasksup.errors import TasksupError

METRICS_FILE = "metrics.jsonl"
BREAK_ACCURACY = 0.5  # mean greedy accuracy over the tasks; chance is 1/8 on ret, about 0 on plus


@dataclass
class Curves:
    name: str
    steps: list[int]  # loss lines
    loss: list[float]
    eval_steps: list[int]
    accuracy: dict[str, list[float]]  # task -> greedy accuracy at each eval step
    tokens_per_step: float | None = None

    @property
    def mean_accuracy(self) -> list[float]:
        per_task = list(self.accuracy.values())
        return [sum(a[i] for a in per_task) / len(per_task) for i in range(len(self.eval_steps))]

    def break_step(self, threshold: float = BREAK_ACCURACY) -> int | None:
        """The first evaluated step whose mean greedy accuracy is at least ``threshold`` (None: never)."""
        return next((s for s, a in zip(self.eval_steps, self.mean_accuracy) if a >= threshold), None)

    def summary(self) -> dict:
        return {"run": self.name, "steps": self.steps[-1] if self.steps else 0,
                "final_loss": self.loss[-1] if self.loss else None,
                "final_mean_accuracy": self.mean_accuracy[-1] if self.eval_steps else None,
                "break_step": self.break_step()}


def read_curves(run: str | Path, name: str | None = None) -> Curves:
    """The curves in ``run``'s metrics.jsonl (a training output folder)."""
    path = Path(run) / METRICS_FILE
    if not path.is_file() and (Path(run) / "train_config.yaml").is_file():
        raise TasksupError(f"{run} is a training run stopped before its first logged step: no curves yet "
                           "(`tasksup train CONFIG --out RUN --resume` continues it)")
    if not path.is_file():
        raise TasksupError(f"{run} has no {METRICS_FILE}: not a tasksup training run")
    curves = Curves(name or Path(run).name, [], [], [], {})
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            curves.steps.append(record["step"])
            curves.loss.append(record["loss"])
        elif "eval" in record:
            if curves.eval_steps and record["step"] <= curves.eval_steps[-1]:
                continue  # the final evaluation repeats the last step of a resumed run
            curves.eval_steps.append(record["step"])
            for task, acc in record["eval"].items():
                curves.accuracy.setdefault(task, []).append(acc)
    return curves


def plot_curves(runs: Sequence[Curves], stem: Path, title: str = "") -> list[Path]:
    """Loss (left) and mean greedy accuracy with each task's thin line (right), one colour per run."""
    from tasksup.plots import plt, save

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, run in enumerate(runs):
        color = f"C{i}"
        ax_loss.plot(run.steps, run.loss, color=color, lw=1, label=run.name)
        for acc in run.accuracy.values():
            ax_acc.plot(run.eval_steps, acc, color=color, lw=0.5, alpha=0.35)
        broke = run.break_step()
        label = f"{run.name} (mean; broke at {broke})" if broke is not None else f"{run.name} (mean; no break)"
        ax_acc.plot(run.eval_steps, run.mean_accuracy, color=color, lw=2, label=label)
    ax_loss.set(xlabel="step", ylabel="loss per answer (Eq. 1)", yscale="log")
    ax_acc.set(xlabel="step", ylabel="greedy single-task accuracy", ylim=(-0.02, 1.02))
    ax_acc.axhline(BREAK_ACCURACY, ls=":", color="gray", lw=1, label=f"break: mean accuracy {BREAK_ACCURACY:g}")
    ax_acc.plot([], [], color="gray", lw=0.5, label="thin: one task each")
    ax_loss.legend(fontsize=7)
    ax_acc.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save(fig, stem)
