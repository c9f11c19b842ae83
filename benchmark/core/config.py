"""The effective configuration of one run (one cell), its settings groups, and its content keys.

A `RunConfig` holds the fields every run has (dataset, arch, objectives, method, sparsity, scope, seed, the
pretrain and finetune budgets, the attacks, the evaluation) plus one settings dataclass per *active*
plug-in group: the method's (`admm`), the objectives' (`trades`, `smoothing`, `verifiable`) and the
evaluators' (`certify`, `verify`). Plug-ins declare their groups with `SettingsGroup` in their own file and
register them through their registry; this module knows no plug-in by name (DESIGN.md, property 9).

Keys (DESIGN.md, property 7) follow one rule for runs, pretrained models and evaluations: every value the
work depends on is hashed, budgets included, except a field that did not exist at the frozen schema
baseline (`key_baseline.json`, written at KEY_VERSION) while it still has the value it was introduced with.
So a new option with a default leaves every key alone, and a retuned preset value changes the key.
Presets supply values; they are not the defaults of these dataclasses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from benchmark.core.registry import Registry

KEY_VERSION = 2  # 1: hashed non-default fields only (before the plug-in settings groups); 2: this rule
BASELINE_FILE = Path(__file__).with_name("key_baseline.json")
ROLES = ("method", "objective", "evaluator")
BUDGETS = ("preset", "equal-passes")  # see RunConfig.budget and benchmark.grid.equal_passes


def setting(default: Any = dataclasses.MISSING, *, help: str = "", minimum: float | None = None,
            choices: tuple[Any, ...] | None = None, introduced: Any = dataclasses.MISSING,
            default_factory: Callable[[], Any] | Any = dataclasses.MISSING) -> Any:
    """A dataclass field with what validation and the key rule need: a help line, a lower bound or a
    closed set of values, and, for a field added after the key baseline, the value it was introduced with
    (while a run keeps that value, the field stays out of its key)."""
    meta = {"help": help, "minimum": minimum, "choices": choices}
    if introduced is not dataclasses.MISSING:
        meta["introduced"] = introduced
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainSettings:
    """Optimiser and budget of one phase."""

    epochs: int = setting(0, minimum=0, help="training epochs of the phase")
    lr: float = setting(0.1, minimum=0.0, help="learning rate (cosine-annealed per epoch by default)")
    optimizer: str = setting("sgd", choices=("sgd", "adam"), help="optimizer")
    momentum: float = setting(0.9, minimum=0.0, help="SGD momentum")
    weight_decay: float = setting(1e-4, minimum=0.0, help="weight decay")
    schedule: str = setting("cosine", choices=("cosine", "constant"), help="learning-rate schedule, per epoch")
    batch_size: int = setting(128, minimum=1, help="training batch size")


@dataclass
class AttackSettings:
    """PGD. eps and step_size are pixel units; None means the dataset's default (l-inf).

    Training attacks are l-inf with the objective's own loss; norm, loss and targeted are evaluation options.
    """

    eps: float | None = setting(None, minimum=0.0, help="radius in [0, 1] pixel units (default: the dataset's)")
    step_size: float | None = setting(None, minimum=0.0, help="step size (default: from the dataset and steps)")
    steps: int = setting(10, minimum=0, help="attack steps")
    restarts: int = setting(1, minimum=1, help="random restarts (an example must survive every one)")
    norm: str = setting("linf", choices=("linf", "l2"), help="threat model")
    loss: str = setting("ce", choices=("ce", "margin", "dlr"), help="attack loss")
    targeted: bool = setting(False, help="towards the most likely wrong class of the clean input")


@dataclass
class EvalSettings:
    """What evaluates a trained model, beyond the PGD settings of `eval_attack`; none of it is in a run's key.

    Evaluators run in the listed order and each attack only attacks the examples every attack before it left
    standing, so list cheap attacks first. AutoAttack's `autoattack` is `standard`, `rand` or a comma list of
    its attacks (apgd-ce, apgd-t, apgd-dlr, fab, fab-t, square).
    """

    evaluators: list[str] = setting(default_factory=lambda: ["clean", "pgd", "autoattack"],
                                    help="evaluators in cascade order")
    autoattack: str = setting("apgd-ce,apgd-t,square", help="AutoAttack version: standard, rand or a list")
    eps_sweep: list[float] = setting(default_factory=lambda: [0.5, 1.0, 1.5, 2.0], minimum=0.0,
                                     help="PGD at these multiples of the evaluation eps")
    checks: bool = setting(True, help="the gradient-masking self-checks")
    check_examples: int = setting(100, minimum=1, help="examples the costlier checks look at")
    square_queries: int = setting(1000, minimum=1, help="Square's queries in a custom AutoAttack list and the "
                                                        "black-box check")
    batch_size: int = setting(256, minimum=1, help="evaluation batch size")


@dataclass(frozen=True)
class SettingsGroup:
    """A plug-in's settings: `--set <name>.<field>=...`, `config.settings_of(<name>)`.

    role: whose they are (method, objective or evaluator); users: the registered plug-ins of that role that
    read them (filled by the registries; a group may serve several, as `smoothing` serves two objectives).
    budget: the group's preset values, `(PresetContext) -> {field: value}`. aliases: old spellings and the
    names they stand for, a setting (`admm_rho` -> `admm.rho`) or a whole prefix (`prune` -> `hydra`).
    """

    name: str
    cls: type
    role: str
    budget: Callable[[Any], dict[str, Any]] | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    users: set[str] = field(default_factory=set, compare=False)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"settings group {self.name!r}: role must be one of {ROLES}, got {self.role!r}")


SETTINGS: Registry[SettingsGroup] = Registry("settings group")


def register_settings(group: SettingsGroup | None, role: str, user: str) -> None:
    """Called by the plug-in registries: `user` (a method, objective or evaluator name) reads `group`."""
    if group is None:
        return
    if group.role != role:
        raise ValueError(f"{role} {user!r} declares settings group {group.name!r} of role {group.role!r}")
    if group.name not in SETTINGS:
        SETTINGS.add(group.name, group)
    elif SETTINGS.get(group.name).cls is not group.cls:
        raise ValueError(f"settings group {group.name!r} is declared twice with different classes")
    SETTINGS.get(group.name).users.add(user)


@dataclass
class RunConfig:
    """Everything that determines one run's result (the device and paths are not part of it)."""

    dataset: str = "digits"
    arch: str | None = None  # None: the dataset's default architecture
    objective: str = "trades"
    pretrain_objective: str | None = None  # None: same as objective
    method: str = "dense"
    sparsity: float = 0.0
    scope: str = "layer"
    seed: int = 0
    preset: str = "quick"
    budget: str = setting("preset", choices=BUDGETS, introduced="preset",
                          help="preset: every method its preset epochs; equal-passes: each method's training "
                               "raised to the passes of the costliest method at its sparsity")
    pretrain: TrainSettings = field(default_factory=TrainSettings)
    finetune: TrainSettings = field(default_factory=TrainSettings)
    train_attack: AttackSettings = field(default_factory=AttackSettings)
    eval_attack: AttackSettings = field(default_factory=AttackSettings)
    train_examples: int | None = setting(None, minimum=1, help="training examples (default: the whole split)")
    eval_examples: int | None = setting(None, minimum=1, help="evaluation examples (default: the whole split)")
    eval: EvalSettings = field(default_factory=EvalSettings)
    amp: str = setting("fp32", choices=("fp32", "bf16"), introduced="fp32",
                       help="training precision: bf16 autocast of every phase's forward passes and training attacks "
                            "(changes the results, so it is in the key; evaluation stays fp32)")
    # settings group name -> its settings dataclass. A resolved config holds every registered group; keys and
    # config.json take only the active ones (so `replace(method=...)` keeps the preset's budgets).
    groups: dict[str, Any] = field(default_factory=dict)

    @property
    def effective_pretrain_objective(self) -> str:
        return self.pretrain_objective or self.objective

    # -------------------------------------------------------------------------------- settings groups

    def settings_of(self, name: str) -> Any:
        """The settings of group `name`: this run's, or the group's defaults where the run has none."""
        return self.groups[name] if name in self.groups else SETTINGS.get(name).cls()

    def with_settings(self, name: str, **changes: Any) -> RunConfig:
        """A copy with fields of group `name` replaced."""
        return self.replace(groups={**self.groups, name: dataclasses.replace(self.settings_of(name), **changes)})

    def active_groups(self) -> list[str]:
        """The groups this run's method, objectives and evaluators read, in registry order."""
        users = {"method": {self.method}, "objective": {self.objective, self.effective_pretrain_objective},
                 "evaluator": set(self.eval.evaluators)}
        return [n for n in SETTINGS.names() if SETTINGS.get(n).users & users[SETTINGS.get(n).role]]

    def only_active(self) -> RunConfig:
        """A copy holding exactly the active groups (defaults for those it had none of)."""
        return self.replace(groups={n: self.settings_of(n) for n in self.active_groups()})

    # ------------------------------------------------------------------------------------------- keys

    def key(self) -> str:
        """The trained model's key: everything training depends on, evaluation left out (a new evaluator or
        attack strength re-evaluates, it does not retrain)."""
        return content_key(self.key_settings())

    def key_settings(self) -> dict[str, Any]:
        """The values `key` hashes (nested as the config is)."""
        values = key_values(self, ("dataset", "arch", "objective", "method", "sparsity", "scope", "seed", "budget",
                                   "pretrain", "finetune", "train_attack", "train_examples", "amp"))
        values["pretrain_objective"] = self.effective_pretrain_objective
        values["groups"] = self._group_values(lambda g: g.role in ("method", "objective"))
        return values

    def pretrain_settings(self) -> dict[str, Any]:
        """What the dense pretrained model depends on: shared by all methods and sparsities."""
        values = key_values(self, ("dataset", "arch", "seed", "pretrain", "train_attack", "train_examples", "amp"))
        values["objective"] = objective = self.effective_pretrain_objective
        values["groups"] = self._group_values(lambda g: g.role == "objective" and objective in g.users)
        return values

    def pretrain_key(self) -> str:
        return content_key(self.pretrain_settings())

    def eval_key(self) -> str:
        """Everything the evaluation of a trained model depends on."""
        values = key_values(self, ("eval_attack", "eval_examples", "eval"))
        values["groups"] = self._group_values(lambda g: g.role == "evaluator")
        return content_key(values)

    def _group_values(self, wanted: Callable[[SettingsGroup], bool]) -> dict[str, Any]:
        """The active groups that `wanted` selects, under the key rule."""
        return {n: key_values(self.settings_of(n), None, f"groups.{n}.") for n in self.active_groups()
                if wanted(SETTINGS.get(n))}

    # ------------------------------------------------------------------------------- (de)serialising

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """The inverse of to_dict (for config.json and for cells sent to other processes)."""
        nested = {f.name: f.type for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name == "groups":
                kwargs[name] = {g: SETTINGS.get(g).cls(**v) for g, v in value.items()}
            elif name in _NESTED:
                kwargs[name] = _NESTED[name](**value)
            elif name in nested:
                kwargs[name] = value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


_NESTED = {"pretrain": TrainSettings, "finetune": TrainSettings, "train_attack": AttackSettings,
           "eval_attack": AttackSettings, "eval": EvalSettings}


# ------------------------------------------------------------------------------------------------ keys


def content_key(values: dict[str, Any]) -> str:
    """The hash of a key's values (see key_values), with the key version."""
    blob = json.dumps({"key_version": KEY_VERSION, **values}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def key_values(obj: Any, names: tuple[str, ...] | None = None, prefix: str = "") -> dict[str, Any]:
    """The fields `names` of a (nested) dataclass instance as plain values, under the key rule: every value,
    except a field absent from the frozen baseline that declares the value it was `introduced` with and still
    has it. `prefix` is the dotted path of obj in the key schema (`pretrain.`, `groups.admm.`)."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        if names is not None and f.name not in names:
            continue
        value, path = getattr(obj, f.name), f"{prefix}{f.name}"
        if path not in baseline_fields() and "introduced" in f.metadata and value == f.metadata["introduced"]:
            continue
        out[f.name] = key_values(value, None, f"{path}.") if dataclasses.is_dataclass(value) else value
    return out


@cache
def baseline_fields() -> frozenset[str]:
    """The dotted field paths of the frozen key baseline (see module docstring)."""
    return frozenset(json.loads(BASELINE_FILE.read_text())["fields"])


def schema_fields() -> Iterator[tuple[str, dataclasses.Field]]:
    """Every leaf field of the key schema, as (dotted path, field): the core config's and each group's."""
    def walk(cls: type, prefix: str) -> Iterator[tuple[str, dataclasses.Field]]:
        for f in fields(cls):
            kind = _NESTED.get(f.name) if cls is RunConfig else None
            if f.name == "groups" and cls is RunConfig:
                continue
            if kind is not None:
                yield from walk(kind, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", f

    yield from walk(RunConfig, "")
    for name in SETTINGS.names():
        yield from walk(SETTINGS.get(name).cls, f"groups.{name}.")
