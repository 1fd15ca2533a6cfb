"""Training configs: a :class:`TrainConfig` dataclass validated from YAML, and model-size presets.

A preset fixes the GPT-2 architecture (layers, heads, width); ``n_layer``/``n_head``/``n_embd`` in a
config override it. ``paper`` is the paper's §4 model (12 layers, 12 heads, 768 wide: about 86M
parameters with our character vocabulary); ``small`` is the CPU model the embedded checkpoints use;
``tiny`` is for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tasksup.config import apply_overrides, build_config, check_fields, read_yaml
from tasksup.errors import TasksupError

PRESETS = {
    "paper": {"n_layer": 12, "n_head": 12, "n_embd": 768},
    "small": {"n_layer": 4, "n_head": 4, "n_embd": 128},
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64},
}
MIXED_PRECISION = ("no", "bf16", "fp16")
POSITION_INITS = ("random", "sinusoidal", "lines")
POSITION_OFFSETS = ("none", "random")
TOKENIZERS = ("char", "bpe")
ARCHITECTURES = ("gpt2", "llama")


@dataclass
class TrainConfig:
    """Every setting of ``tasksup train``; the paper (§4) fixes only the task families and the model size."""

    # a family, a task, or a list of task and family names; each sequence holds one task, so the tasks may read
    # different inputs (the Fig. 2 model: add_translate, country, copy_add and letters together)
    tasks: str | list[str] = "ret"
    task_files: list[str] = field(default_factory=list)  # YAML files declaring extra tasks (tasks/declared.py)
    n_examples: int = 24  # m, examples per training sequence (paper: not stated); the loss covers examples 2..m
    # > 0: a sequence stops before the example that would take it past this many characters (at least 2 examples,
    # at most n_examples): short-example tasks get more examples and padding is small when tasks' lines differ
    sequence_chars: int = 0
    # relative sampling weight of a task per training sequence (a task not named: 1; none named: uniform), to spend
    # more sequences on the tasks that learn slowest, e.g. {add_en: 2, copy_op1: 2}
    task_weights: dict[str, float] = field(default_factory=dict)
    # probability that an example's answer is the same task's answer to another input (a wrong label, not a loss
    # target; another task's answer only by coincidence), so that a model learns to read a task from examples
    # that disagree (docs/training.md, "Noisy examples"). 0: every answer right, as in the paper
    example_noise: float = 0.0
    # probability that an example is answered by another task over the same inputs (uniformly drawn): a right
    # answer of another task, never a loss target, so the sequence's task is its majority, not its first example
    # (docs/training.md, "The example-1 shortcut"). 0: every example of the sequence's task, as Eq. 1
    task_noise: float = 0.0
    # probability that an example is hidden from each later example (an attention mask; positions unchanged),
    # so no one example is always there to read the task from. 0: full causal attention, as in the paper
    example_dropout: float = 0.0
    # A pretraining-like corpus (docs/training.md, "Mixed sequences"): this share of the sequences mixes tasks, the
    # rest keep one task each. A mixed sequence draws 2..mix_max_tasks tasks (uniformly many; which ones by
    # task_weights), then w ~ Dirichlet(mix_alpha) over them, then each example's task from w; every answer is its own
    # task's loss target. 0: one task per sequence (Eq. 1, the paper's §4), drawn exactly as before the key existed
    mix_share: float = 0.0
    mix_alpha: float = 1.0
    mix_max_tasks: int = 2
    # The holdout: a mixed sequence holds at most mix_per_group tasks of any one group. Groups are lists of task or
    # family names; null: each entry of `tasks` is a group (a family: its tasks), so with mix_per_group 1 no sequence
    # mixes two tasks of one family and every mixture an experiment builds from a family is unseen. A task in no
    # group is a group of its own
    mix_groups: list[list[str]] | None = None
    mix_per_group: int = 1
    delimiter: str = "\n"  # written after every answer, as in the prompts the experiments score
    target_delimiter: bool = True  # also predict the delimiter after answers 2..m (Eq. 1 literally: False)
    target_first_answer: bool = False  # also predict example 1's answer, with no example before it (Eq. 1: False)
    # a curriculum stage: start from this trained model (ours, `tasksup train` output) and its tokenizer instead
    # of a fresh init; optimizer, schedule and step count start anew. The size and init keys must then stay unset.
    init_from: str | None = None
    # model: gpt2 (GPT2Config, learned absolute positions: the paper's) | llama (LlamaConfig: RoPE, RMSNorm,
    # SwiGLU, tied embeddings; a deviation, docs/training.md). Sizes from a preset, each size key overriding it
    architecture: str = "gpt2"
    preset: str = "small"  # paper | small | tiny
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    n_positions: int | None = None  # context length; default: the longest training sequence rounded up to 64 (x2 with random offsets)
    dropout: float = 0.0  # GPT-2's resid/embd/attn dropout (synthetic data never repeats: none needed)
    init_std: float = 0.02  # GPT-2's initializer_range (std of every weight at init); see docs/training.md
    # random: N(0, init_std) | sinusoidal: Vaswani et al. | lines: row p = A[p mod L] + B[p div L], L the family's
    # fixed example length in tokens (ret: 12), A and B random with std init_std/sqrt(2). All are learned afterwards.
    position_init: str = "random"
    # none: positions 0..T-1 (GPT-2, the paper) | random: each training sequence starts at a uniform position in
    # [0, n_positions - T] (Ruoss et al. 2023), so no per-absolute-position lookup table can fit the data
    position_offset: str = "none"
    extra_chars: str = ""  # characters the tokenizer needs beyond those the tasks' examples produce
    # char: one token per character (every embedded model before fig2-small) | bpe: subword merges learned from
    # the tasks' examples (models/bpe_tokenizer.py), so that whole capitals, numbers and number words are tokens.
    # These three keys are unused with init_from: a stage keeps its starting model's tokenizer (its saved
    # train_config.yaml then shows the defaults)
    tokenizer: str = "char"
    vocab_size: int = 4096  # bpe only: tokens in all (3 special tokens, every character, then merges)
    # bpe only: digits per token at most (3: Llama 3, numbers up to 999 whole; 1: Llama 2 / Qwen2, digit by digit)
    bpe_digits: int = 3
    # optimisation: AdamW, linear warm-up then cosine decay to 0, gradient clipping
    steps: int = 2000
    batch_size: int = 32  # sequences per optimizer step, summed over all processes
    lr: float = 1e-3
    weight_decay: float = 0.01
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 100
    grad_clip: float = 1.0
    mixed_precision: str = "no"  # no | bf16 | fp16 (accelerate autocast; bf16 also runs on recent CPUs)
    cpu_threads: int = 0  # torch CPU threads; 0 = torch's default (one per core). 1 is faster on a shared, busy CPU
    seed: int = 0  # training sequence i of step s is drawn from numpy default_rng([seed, 1, s, i])
    # logging, evaluation and checkpoints
    log_every: int = 20
    eval_every: int = 250  # single-task ICL accuracy (greedy, teacher-forced) per task; 0 = only at the end
    eval_examples: int | None = None  # examples per eval prompt; default n_examples - 1 (the longest trained context)
    eval_prompts: int = 64  # per task, during training
    final_eval_prompts: int = 100  # per task, at the end, with the exact top-1 output (0 = skip)
    save_every: int = 500  # model + resume state; 0 = only at the end
    snapshot_every: int = 0  # also keep a loadable copy of the model in snapshots/step-NNNNNN every this many steps (0 = none)

    def __post_init__(self):
        check_fields(self)  # every numeric setting in its range (tasksup.config.RANGES)

    def model_size(self) -> dict:
        size = dict(PRESETS[self.preset])
        for key in size:
            if getattr(self, key) is not None:
                size[key] = getattr(self, key)
        return size

    @property
    def eval_m(self) -> int:
        return self.eval_examples if self.eval_examples is not None else self.n_examples - 1


def validate(cfg: TrainConfig) -> TrainConfig:
    if cfg.preset not in PRESETS:
        raise TasksupError(f"preset must be one of {', '.join(PRESETS)}, got {cfg.preset!r}")
    if cfg.n_examples < 2:
        raise TasksupError(f"n_examples must be at least 2 (Eq. 1 scores examples 2..m), got {cfg.n_examples}")
    if not 1 <= cfg.eval_m < cfg.n_examples:
        raise TasksupError(f"eval_examples must be in [1, n_examples - 1] = [1, {cfg.n_examples - 1}], got {cfg.eval_m}")
    size = cfg.model_size()
    if size["n_embd"] % size["n_head"]:
        raise TasksupError(f"n_embd ({size['n_embd']}) must be a multiple of n_head ({size['n_head']})")
    if len(cfg.adam_betas) != 2:
        raise TasksupError(f"adam_betas must be two numbers in [0, 1), got {cfg.adam_betas}")
    if cfg.position_init not in POSITION_INITS:
        raise TasksupError(f"position_init must be one of {', '.join(POSITION_INITS)}, got {cfg.position_init!r}")
    if cfg.position_init == "lines" and cfg.position_offset != "none":
        raise TasksupError("position_init: lines needs position_offset: none (a random offset moves every line's phase)")
    if cfg.position_offset not in POSITION_OFFSETS:
        raise TasksupError(f"position_offset must be one of {', '.join(POSITION_OFFSETS)}, got {cfg.position_offset!r}")
    if cfg.architecture not in ARCHITECTURES:
        raise TasksupError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {cfg.architecture!r}")
    if cfg.architecture == "llama" and (cfg.position_init != "random" or cfg.position_offset != "none"):
        raise TasksupError("position_init and position_offset set GPT-2's learned positions: architecture llama "
                           "(RoPE) takes neither")
    if cfg.tokenizer not in TOKENIZERS:
        raise TasksupError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {cfg.tokenizer!r}")
    if cfg.mixed_precision not in MIXED_PRECISION:
        raise TasksupError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {cfg.mixed_precision!r}")
    if not cfg.delimiter:
        raise TasksupError("the delimiter must not be empty")
    bad = {k: v for k, v in cfg.task_weights.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
    if bad:  # their range (> 0) is checked with every numeric setting's (tasksup.config.RANGES)
        raise TasksupError(f"task_weights must be numbers, got {bad}")
    if cfg.mix_share and (cfg.example_noise or cfg.task_noise):
        raise TasksupError("mix_share mixes tasks in a sequence with every answer right: it takes neither example_noise "
                           "nor task_noise")
    if cfg.mix_groups is not None and not (isinstance(cfg.mix_groups, list)
                                           and all(isinstance(g, list) and g for g in cfg.mix_groups)):
        raise TasksupError(f"mix_groups must be a list of non-empty lists of task or family names, got {cfg.mix_groups!r}")
    if cfg.init_from is not None:
        fixed = [k for k in ("n_layer", "n_head", "n_embd", "n_positions") if getattr(cfg, k) is not None]
        fixed += ["position_init"] * (cfg.position_init != "random") + ["architecture"] * (cfg.architecture != "gpt2")
        if fixed:
            raise TasksupError(f"init_from takes the model as trained: remove {', '.join(fixed)} from the config")
    return cfg


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training YAML, apply ``--set key=value`` overrides, validate."""
    raw = apply_overrides(read_yaml(path), overrides or [])
    return validate(build_config(TrainConfig, raw, source=Path(path).name))
