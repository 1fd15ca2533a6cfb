"""The README cannot drift: each of its commands runs (a cheap variant where the real one takes minutes), and
each number it quotes is read from the file it cites."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ENV_NEEDS = "# needs:"  # a command that cannot run here says why, in a trailing comment
# Appended to a command (a later option wins) so that it runs in seconds; the command itself is as written.
CHEAP = {"run": ["--set", "n_prompts=2", "--no-progress"],
         "vectors layers": ["--n-prompts", "2", "--n-queries", "2", "--no-progress"],
         "theory verify": ["--trials", "1"]}


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("tasksup ")]


def test_the_readme_has_a_tour():
    assert len(readme_commands()) >= 6


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(command, tmp_path):
    if ENV_NEEDS in command:
        pytest.skip(command.split(ENV_NEEDS, 1)[1].strip())
    args = shlex.split(command.split("#", 1)[0])[1:]
    words = args[0] if args[0] not in ("vectors", "theory", "bench") else " ".join(args[:2])
    args += CHEAP.get(words, [])
    if args[0] == "run":  # into a fresh folder: the committed results stay as they are
        args = [a for i, a in enumerate(args) if a != "--out" and (i == 0 or args[i - 1] != "--out")]
        args += ["--out", str(tmp_path / "out")]
    res = subprocess.run([sys.executable, "-m", "tasksup.cli", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                           "HOME": str(Path.home())})
    assert res.returncode == 0, res.stderr[-2000:]


# (text in the README, file, path of keys in its JSON, format of the value)
NUMBERS = [
    ("add_fr and add_es, the median probabilities are {} / {} / {} / {}", "results/fig2_add_translate_small/fig2-small/summary.json",
     [["per_task", t, "median"] for t in ("add", "add_en", "add_fr", "add_es")], "{:.3f}"),
    ("with {} left to any\nother output", "results/fig2_add_translate_small/fig2-small/summary.json",
     [["other", "median"]], "{:.3f}"),
    ("Pearson of λ and mean P(A) {}", "results/fig3_ret/ret-small/summary.json", [["pearson_mean_a_vs_lambda"]], "{:.3f}"),
    ("{} of mixed prompts\ngive ≥ 0.9 of the task mass to one task, and {} choose example 1's task",
     "results/fig3_ret/ret-small/summary.json",
     [["per_prompt", "committed"], ["per_prompt", "follows_example_1"]], "{:.3f}"),
    ("distribution D1) is {} / {} / {} / {} from", "results/fig6_numeric6_mixed/summary.json",
     [["models", i, "distributions", "D1", "r", "mean"] for i in range(4)], "{:.2f}"),
    ("reverses it (95% intervals [{}, {}] against [{}, {}])", "results/fig6_numeric6_mixed/summary.json",
     [["models", i, "distributions", "D1", "r", end] for i in (2, 3) for end in ("ci_low", "ci_high")], "{:.2f}"),
    ("model's answer probabilities P falls likewise, {} / {} / {} / {}", "results/fig6_numeric6_mixed/summary.json",
     [["models", i, "distributions", "D1", "kl", "mean"] for i in range(4)], "{:.2f}"),
    ("trained with half of it, reaches r {} and KL {}\n", "results/fig6_numeric6_mixed_l_recipes/summary.json",
     [["models", 4, "distributions", "D1", q, "mean"] for q in ("r", "kl")], "{:.2f}"),
    ("by at most {} over", "results/theory/verify.json", [["max_output_error_exact"]], "{:.1e}"),
]


@pytest.mark.parametrize("text, source, keys, fmt", NUMBERS, ids=[n[1] + ":" + n[0][:30] for n in NUMBERS])
def test_readme_number_matches_its_file(text, source, keys, fmt):
    assert f"({source})" in README or f"[{source}]" in README, f"the README does not cite {source}"
    data = json.loads((ROOT / source).read_text())

    def get(path):
        value = data
        for key in path:
            value = value[key]
        return value

    assert text.format(*(fmt.format(get(k)) for k in keys)) in README
