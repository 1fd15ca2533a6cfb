"""Malformed input through the real CLI, one subprocess per case: exit status 2, and stderr is exactly one
line, ``tasksup: error: ...``, naming the key, option or file; no traceback anywhere. Then a clean terminal:
the error is the last line even with progress bars, and third-party warnings and bars stay off it.

Most cases fail before a model is loaded, which takes about 0.3 s (the CLI imports no torch before it has
checked its input); those that need one use copies of the committed checkpoints/ret-small.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIG2 = str(ROOT / "configs" / "fig2_copy_add.yaml")  # experiment: mixture
FIG3 = str(ROOT / "configs" / "fig3_ret.yaml")  # experiment: lambda_sweep, model: checkpoints/ret-small
RET = ROOT / "checkpoints" / "ret-small"
ENV = {**{k: v for k, v in os.environ.items() if k != "TASKSUP_VERBOSE"}, "OMP_NUM_THREADS": "1"}


def tasksup(*args, cwd=ROOT, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tasksup.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=timeout)


def stderr_lines(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Bad config, task and prompt files, and broken copies of checkpoints/ret-small."""
    root = tmp_path_factory.mktemp("bad")
    texts = {
        "empty.yaml": "", "comment.yaml": "# nothing but a comment\n", "list.yaml": "- 1\n- 2\n",
        "scalar.yaml": "just some text\n", "broken.yaml": "tasks: [copy_op1,\n", "twice.yaml": "n_prompts: 5\nn_prompts: 6\n",
        "typo.yaml": "n_promts: 5\n", "intkey.yaml": "1: 2\n", "prompt.txt": "12@34=12\n56@78=",
        "theory_bad.yaml": "k_values: [2, 0]\n", "train_empty.yaml": "", "tasks_not_list.yaml": "tasks: 5\n",
    }
    for name, text in texts.items():
        (root / name).write_text(text)
    (root / "latin1.yaml").write_bytes("title: café\n".encode("latin-1"))
    (root / "latin1.txt").write_bytes("12@34=\xe9".encode("latin-1"))
    (root / "a_dir").mkdir()
    models = root / "models"
    for name in ("no_config", "bad_json", "no_tokenizer", "no_weights", "garbage_weights", "missing_tensor"):
        shutil.copytree(RET, models / name)
    (models / "no_config" / "config.json").unlink()
    (models / "bad_json" / "config.json").write_text('{"model_type": "gpt2",')
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (models / "no_tokenizer" / f).unlink()
    (models / "no_weights" / "model.safetensors").unlink()
    (models / "garbage_weights" / "model.safetensors").write_bytes(os.urandom(4096))
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(RET / "model.safetensors"))
    del tensors["transformer.h.1.mlp.c_fc.weight"]
    save_file(tensors, str(models / "missing_tensor" / "model.safetensors"), metadata={"format": "pt"})
    return {"root": root, **{p.name: p for p in root.iterdir()}, **{p.name: p for p in models.iterdir()}}


# case id -> (arguments, what the error line must contain); {name} is a path from `files`
CASES = {
    # config files
    "empty config file": (["run", "{empty.yaml}"], "'{empty.yaml}' is empty"),
    "comment-only config file": (["run", "{comment.yaml}"], "is empty"),
    "non-UTF-8 config file": (["run", "{latin1.yaml}"], "'{latin1.yaml}' is not UTF-8"),
    "config file holds a list": (["run", "{list.yaml}"], "must hold a mapping of settings, not a list"),
    "config file holds a string": (["run", "{scalar.yaml}"], "not a str"),
    "invalid YAML": (["run", "{broken.yaml}"], "'{broken.yaml}' is not valid YAML (line 2)"),
    "key given twice": (["run", "{twice.yaml}"], "the key 'n_prompts' appears twice"),
    "missing config file": (["run", "{root}/nope.yaml"], "nope.yaml' does not exist"),
    "config path is a directory": (["run", "{a_dir}"], "is a directory"),
    "unknown key in file": (["run", "{typo.yaml}"], "typo.yaml: unknown config key 'n_promts' (did you mean 'n_prompts'?"),
    "non-string key": (["run", "{intkey.yaml}"], "unknown config key 1"),
    # --set: ranges, types, choices
    "negative n_prompts": (["run", FIG2, "--set", "n_prompts=-5"], "fig2_copy_add.yaml: n_prompts must be >= 1, got -5"),
    "zero n_prompts": (["run", FIG2, "--set", "n_prompts=0"], "n_prompts must be >= 1, got 0"),
    "float n_prompts": (["run", FIG2, "--set", "n_prompts=2.5"], "n_prompts = 2.5 is not of type int"),
    "bool n_examples": (["run", FIG2, "--set", "n_examples=true"], "n_examples = True is not of type int"),
    "zero n_examples": (["run", FIG2, "--set", "n_examples=0"], "n_examples must be >= 1"),
    "zero batch_size": (["run", FIG2, "--set", "batch_size=0"], "batch_size must be >= 1"),
    "negative seed": (["run", FIG2, "--set", "seed=-1"], "seed must be in [0, 4294967295], got -1"),
    "negative top_k": (["run", FIG2, "--set", "top_k=-1"], "top_k must be >= 0"),
    "zero top_max_tokens": (["run", FIG2, "--set", "top_max_tokens=0"], "top_max_tokens must be >= 1"),
    "unknown tokenization": (["run", FIG2, "--set", "tokenization=bpe"], "tokenization must be one of in_context, separate"),
    "unknown order": (["run", FIG2, "--set", "order=sideways"], "order must be one of random, blocked"),
    "unknown dtype": (["run", FIG2, "--set", "dtype=float8"], "dtype must be one of float32, bfloat16, float16"),
    "NaN mixture weight": (["run", FIG2, "--set", "mixture=[.nan,0.5,0.5]"], "not a number"),
    "negative mixture weight": (["run", FIG2, "--set", "mixture=[-0.5,1,0.5]"], "negative entry"),
    "mixture of wrong length": (["run", FIG2, "--set", "mixture=[0.5,0.5]"], "mixture has 2 entries but there are 3 tasks"),
    "unknown task": (["run", FIG2, "--set", "tasks=[copy_op1,nope]"], "unknown task 'nope'"),
    "unknown experiment": (["run", FIG2, "--set", "experiment=fig99"], "unknown experiment 'fig99'"),
    "--set without =": (["run", FIG2, "--set", "n_prompts"], "--set takes key=value, got 'n_prompts'"),
    "--set value not YAML": (["run", FIG2, "--set", "mixture=[1,"], "--set 'mixture=[1,': the value is not valid YAML"),
    "non-UTF-8 task file": (["run", FIG2, "--set", "task_files=[{latin1.yaml}]"], "task file '{latin1.yaml}' is not UTF-8"),
    "empty task file": (["run", FIG2, "--set", "task_files=[{empty.yaml}]"], "task file '{empty.yaml}' is empty"),
    "task file without a list of tasks": (["run", FIG2, "--set", "task_files=[{tasks_not_list.yaml}]"],
                                          "tasks must be a list of mappings, got 5"),
    "lambda out of [0, 1]": (["run", FIG3, "--set", "lambdas=[0.5,1.5]"], "lambdas must be numbers in [0, 1]"),
    "confidence out of (0, 1)": (["run", ROOT / "configs" / "fig6_scaling.yaml", "--set", "confidence=1.5"],
                                 "confidence must be in (0, 1), got 1.5"),
    # command-line options of the other commands
    "train: zero steps": (["train", ROOT / "configs" / "train_plus_small.yaml", "--set", "steps=0"],
                          "train_plus_small.yaml: steps must be >= 1, got 0"),
    "train: empty config file": (["train", "{train_empty.yaml}"], "'{train_empty.yaml}' is empty"),
    "decode: zero --k": (["decode", "--model", RET, "--prompt-file", "{prompt.txt}", "--k", "0"], "--k must be >= 1"),
    "decode: zero --max-tokens": (["decode", "--model", RET, "--prompt-file", "{prompt.txt}", "--max-tokens", "0"],
                                  "--max-tokens must be >= 1"),
    "decode: non-UTF-8 prompt file": (["decode", "--model", RET, "--prompt-file", "{latin1.txt}"],
                                      "prompt file '{latin1.txt}' is not UTF-8"),
    "decode: bad --stop escape": (["decode", "--model", RET, "--prompt-file", "{prompt.txt}", "--stop", "\\x"],
                                  "--stop '\\\\x' has an invalid escape sequence"),
    "bench decode: negative --n-prompts": (["bench", "decode", "--model", RET, "--n-prompts", "-1"],
                                           "--n-prompts must be >= 1, got -1"),
    "bench scoring: negative --prompt-tokens": (["bench", "scoring", "--prompt-tokens", "-5"],
                                                "--prompt-tokens must be >= 1, got -5"),
    "bench scoring: zero --repeats": (["bench", "scoring", "--repeats", "0"], "--repeats must be >= 1"),
    "theory: zero --trials": (["theory", "verify", "--trials", "0"], "--trials must be >= 1, got 0"),
    "theory: --n below 3": (["theory", "verify", "--n", "2"], "--n must be >= 3"),
    "theory: K out of range in file": (["theory", "verify", "--config", "{theory_bad.yaml}"],
                                       "theory_bad.yaml: k_values must be numbers >= 1, got [2, 0]"),
    "summarize: no results folder": (["summarize", "{a_dir}"], "holds no results folder (config.json and results.jsonl)"),
    "summarize: not a folder": (["summarize", "{root}/nope"], "nope is not a folder"),
    "vectors: negative --n-prompts": (["vectors", "layers", "--model", RET, "--task", "ret1", "--n-prompts", "-1"],
                                      "n_prompts must be >= 1, got -1"),
    # usage errors are one line too
    "unknown option": (["run", FIG2, "--bogus"], "No such option: --bogus"),
    "option of the wrong type": (["bench", "decode", "--model", RET, "--n-prompts", "many"],
                                 "Invalid value for '--n-prompts'"),
    "unknown command": (["runn"], "No such command 'runn'"),
    # models
    "missing model directory": (["run", FIG2, "--model", "./no/such/model"], "model directory './no/such/model' does not exist"),
    "typo in a relative model path": (["run", FIG2, "--model", "checkpoints/ret-smal"], "'checkpoints/ret-smal' does not exist"),
    "model path is a file": (["run", FIG2, "--model", "{prompt.txt}"], "is not a directory"),
    "model without config.json": (["run", FIG2, "--model", "{no_config}"], "has no config.json"),
    "model with invalid config.json": (["run", FIG2, "--model", "{bad_json}"], "config.json is not a valid JSON object"),
    "model without tokenizer": (["run", FIG2, "--model", "{no_tokenizer}"], "has no tokenizer"),
    "model without weights": (["run", FIG2, "--model", "{no_weights}"], "has no weights"),
    "model with garbage weights": (["run", FIG2, "--model", "{garbage_weights}"], "could not load model"),
    "model missing a tensor": (["run", FIG2, "--model", "{missing_tensor}"],
                               "its weights lack 1 of the model's tensors (transformer.h.1.mlp.c_fc.weight"),
    "unknown device": (["run", FIG2, "--model", RET, "--device", "gpu0"], "device 'gpu0' is not a torch device"),
    "hub id neither cached nor reachable": (["run", FIG2, "--model", "no-such-org/no-such-model"],
                                            "no hub id 'no-such-org/no-such-model' in the Hugging Face cache"),
    "a recipe kept without weights": (["run", FIG2, "--model", ROOT / "checkpoints/fig2-small/recipes/fig2-small-one-task"],
                                      "is a training recipe kept without its weights"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_is_one_line_exit_2(files, tmp_path, case):
    def fill(text) -> str:
        return re.sub(r"\{([\w.]+)\}", lambda m: str(files[m[1]]), str(text))

    args, message = [fill(a) for a in CASES[case][0]], fill(CASES[case][1])
    if args[0] == "run" or args[0] == "train" or args[:2] == ["bench", "decode"]:
        args += ["--out", str(tmp_path / "out")]
    res = tasksup(*args)
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    assert res.returncode == 2, res.stdout + res.stderr
    lines = stderr_lines(res)
    assert len(lines) == 1 and lines[0].startswith("tasksup: error: "), res.stderr
    assert message in lines[0], lines[0]
    assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.mark.parametrize("args, env, message", [
    (["run", FIG2, "--model", "DIR"], {"HF_HUB_OFFLINE": "1"}, "no hub id 'DIR' in the Hugging Face cache (HF_HUB_OFFLINE is set)"),
    (["run", ROOT / "configs" / "fig2_add_translate_gpt35.yaml"], {"OPENAI_API_KEY": None},
     "OpenAI's API needs a key, and $OPENAI_API_KEY is not set")])
def test_unreachable_models_fail_at_once(args, env, message, tmp_path):
    """A README placeholder or an API without its key: one line within seconds, before any retry."""
    full = {k: v for k, v in {**ENV, **env}.items() if v is not None}
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "tasksup.cli", *map(str, args), "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, env=full, timeout=120)
    assert res.returncode == 2 and stderr_lines(res) == [f"tasksup: error: {stderr_lines(res)[0][16:]}"]
    assert message in res.stderr and time.monotonic() - start < 20


def test_prompt_longer_than_the_context_is_the_last_line(tmp_path):
    """With progress bars on: the error is stderr's last line, and no weight-loading bar is drawn."""
    res = tasksup("run", FIG3, "--set", "n_examples=500", "--out", tmp_path / "out")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert stderr_lines(res)[-1].startswith("tasksup: error: n_examples=500 needs")
    assert "context" in stderr_lines(res)[-1] and "Loading weights" not in res.stderr


def test_error_closes_live_progress_bars(tmp_path):
    """A bar still open when the error is raised is closed first: it cannot redraw itself below the error."""
    script = tmp_path / "cli.py"
    script.write_text(
        "from tqdm import tqdm\n"
        "from tasksup.cliutil import App, main\n"
        "from tasksup.errors import TasksupError\n"
        "app = App()\n"
        "@app.command()\n"
        "def fails():\n"
        "    bar = tqdm(total=10, desc='prompts')\n"
        "    bar.update(3)\n"
        "    raise TasksupError('prompt 3 is too long')\n"
        "@app.command()\n"
        "def other():\n"
        "    pass\n"
        "main(app)\n")
    res = subprocess.run([sys.executable, str(script), "fails"], capture_output=True, text=True, env=ENV, timeout=60)
    assert res.returncode == 2
    assert res.stderr.endswith("tasksup: error: prompt 3 is too long\n") and "3/10" in res.stderr


def test_third_party_warnings_stay_off_the_terminal(tmp_path):
    """Warnings and library log records: dropped at the terminal, kept in a run's log file; shown when verbose."""
    log = tmp_path / "warnings.log"
    code = ("import logging, warnings\n"
            "from tasksup.logs import logged_to, quiet_third_party\n"
            "quiet_third_party()\n"
            "warnings.warn('dropped')\n"
            "logging.getLogger('somelib').warning('also dropped')\n"
            f"with logged_to({str(log)!r}):\n"
            "    warnings.warn('kept', FutureWarning)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert res.returncode == 0 and res.stdout == res.stderr == ""
    assert "FutureWarning: kept" in log.read_text() and "dropped" not in log.read_text()
    verbose = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env={**ENV, "TASKSUP_VERBOSE": "1"})
    assert "UserWarning: dropped" in verbose.stderr and "also dropped" in verbose.stderr


def test_successful_run_prints_no_third_party_output(tmp_path):
    res = tasksup("run", FIG3, "--set", "n_prompts=1", "--set", "lambdas=[0.5]", "--no-progress", "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and len(res.stdout.strip().splitlines()) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())  # --no-progress still says what it found, and where
    a, b = summary["tasks"]
    assert res.stdout.strip() == f"{a} vs {b}: min mean P({a})+P({b}) {summary['min_mean_sum']:.3f}; results in {tmp_path}"


def test_ctrl_c_says_what_was_saved_and_exits_130(tmp_path):
    """SIGINT after the first records: one line naming how many of the prompts are saved, exit 130; the same
    command then resumes to a complete run."""
    import signal

    args = [sys.executable, "-m", "tasksup.cli", "run", FIG3, "--set", "n_prompts=40", "--set", "batch_size=1",
            "--no-progress", "--out", str(tmp_path)]
    # a background job of a non-interactive shell (make in CI) ignores SIGINT, and Python keeps an ignored SIGINT
    # ignored: the child gets the default back, as a terminal's foreground process has it
    proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ((tmp_path / "results.jsonl").is_file()
                                               and (tmp_path / "results.jsonl").read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    saved = (tmp_path / "results.jsonl").read_text().count("\n")
    assert proc.returncode == 130, err
    assert stderr_lines(subprocess.CompletedProcess(args, 130, out, err)) == [
        f"tasksup: interrupted after {saved}/440 prompts ({tmp_path}); re-run the same command to resume"]
    again = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and (tmp_path / "results.jsonl").read_text().count("\n") == 440


def test_cli_imports_no_torch_before_checking_input():
    """The fast error path of every case above: `tasksup.cli` (every command's module) imports no torch,
    transformers or scipy; commands import them once their input is checked."""
    code = "import sys, tasksup.cli; print(sorted({'torch', 'transformers', 'scipy'} & set(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


@pytest.mark.parametrize("args, status", [(["tasks"], 0), (["run", "missing.yaml"], 2)])
def test_console_script_sets_the_collector_for_its_process(args, status):
    """cliutil.main, on success and on a one-line error alike: a first generation of GC_FIRST_GENERATION objects
    while the command runs, and the heap frozen before the interpreter shuts down."""
    code = ("import atexit, gc, sys; from tasksup import cli, cliutil; atexit.register(lambda: print("
            "gc.get_threshold()[0] == cliutil.GC_FIRST_GENERATION, gc.get_freeze_count() > 0)); "
            f"sys.argv = ['tasksup', *{args!r}]; cli.main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=60)
    assert res.returncode == status, res.stderr
    assert res.stdout.splitlines()[-1] == "True True", res.stdout + res.stderr


def test_every_numeric_setting_has_a_range():
    """config.RANGES covers every int/float setting of every experiment Config and of TrainConfig."""
    from tasksup.config import RANGES
    from tasksup.experiments import EXPERIMENTS, get_experiment
    from tasksup.train import TrainConfig
    from tasksup.vectors.pipeline import VectorConfig

    def numeric(hint) -> bool:  # int, float, or a union or list of them
        return hint in (int, float) or any(numeric(arg) for arg in typing.get_args(hint))

    keys = {f.name for cls in [get_experiment(name).Config for name in EXPERIMENTS] + [TrainConfig, VectorConfig]
            for f in dataclasses.fields(cls) if numeric(typing.get_type_hints(cls)[f.name])}
    assert {"n_prompts", "n_examples", "top_k", "max_tokens", "batch_size", "seed", "lambdas", "lr"} <= keys
    assert keys - set(RANGES) == set()
