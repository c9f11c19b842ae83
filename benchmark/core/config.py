"""The effective configuration of one run (one cell), its content key, and how it is assembled.

Resolution order, later wins: dataclass defaults < preset < YAML file (--config) < command-line flags.
A run's key hashes only the fields that differ from the dataclass defaults, so adding a new field with a
default leaves every existing key unchanged (DESIGN.md, property 7).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from benchmark.core.errors import UserError


@dataclass
class TrainSettings:
    """Optimiser and budget of one phase."""

    epochs: int = 0
    lr: float = 0.1
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine (per epoch) | constant
    batch_size: int = 128


@dataclass
class AttackSettings:
    """PGD. eps and step_size are pixel units; None means the dataset's default (l-inf).

    Training attacks are l-inf with the objective's own loss; norm, loss and targeted are evaluation options.
    """

    eps: float | None = None
    step_size: float | None = None
    steps: int = 10
    restarts: int = 1
    norm: str = "linf"  # linf | l2
    loss: str = "ce"  # ce | margin | dlr
    targeted: bool = False  # towards the most likely wrong class of the clean input


@dataclass
class SmoothingSettings:
    """Gaussian noise of the `smoothing` and `gaussian` objectives (pixel units), and the stability weight."""

    sigma: float = 0.25
    beta: float = 6.0  # `smoothing`: CE + beta x KL(f(x) || f(x + delta)), as HYDRA's stability training
    draws: int = 1  # noise draws per example and step (the losses average over them)


@dataclass
class CertifySettings:
    """Cohen et al.'s CERTIFY for the `smoothing` evaluator (`paper`: HYDRA's N0 100, N 10,000, alpha 0.001).

    sigma None: the run's training sigma. radii: the l2 radii at which certified accuracy is reported
    (0.435 is the l2 ball around the l-inf ball of 2/255 on 32x32x3, the radius read as HYDRA's vra-s).
    examples: how many evaluation examples are certified (None: all). max_batch: noisy inputs per forward.
    """

    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    sigma: float | None = None
    radii: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.435, 0.5, 0.75, 1.0])
    examples: int | None = None
    max_batch: int = 4096


@dataclass
class VerifiableSettings:
    """Schedules of the bound-based objectives `ibp`, `crown-ibp` and `mixtrain`.

    In the dense pretraining the training eps ramps linearly from 0 (per batch; per epoch for `mixtrain`, as in
    its code) over ramp_epochs, after warmup_epochs at eps 0; the prune and finetune phases run at full eps from
    the first step (HYDRA's schedule_length 1). kappa (the natural CE's weight) and CROWN-IBP's beta (the
    weight of the CROWN-IBP bound against IBP's) follow the ramp from their start to their end values.
    `mixtrain`: with probability mixtrain_alpha per batch, CE + iw x the robust CE of symbolic intervals on
    mixtrain_examples examples drawn from the batch, iw = mixtrain_weight x 2.5^floor((epoch - ramp) / 5),
    at most 50.
    """

    warmup_epochs: int = 0
    ramp_epochs: int = 5
    kappa_start: float = 1.0  # Gowal et al.: kappa 1 -> 0.5
    kappa_end: float = 0.5
    beta_start: float = 1.0  # Zhang et al. and HYDRA: beta 1 -> 0
    beta_end: float = 0.0
    mixtrain_alpha: float = 0.8
    mixtrain_examples: int = 5  # HYDRA's scripts: 5 for cnn-small, 1 for cnn-large
    mixtrain_weight: float = 0.1


@dataclass
class VerifySettings:
    """The bound-propagation evaluators `ibp`, `crown` and `sym`: at the evaluation eps (eval_attack.eps) and
    at each of eps_multiples of it, for a verified-accuracy curve. examples: how many evaluation examples are
    verified (None: all); max_batch: examples per bound computation of `crown` and `sym`. A batch of them costs
    what its most unstable example costs (the bounds are padded to it), so on the CPU one at a time is the
    fastest (measured: README); `ibp` takes the whole evaluation batch at once."""

    eps_multiples: list[float] = field(default_factory=lambda: [0.5, 1.5, 2.0])
    examples: int | None = None
    max_batch: int = 1


@dataclass
class EvalSettings:
    """What evaluates a trained model, beyond the PGD settings of `eval_attack`; none of it is in a run's key.

    Evaluators run in the listed order and each attack only attacks the examples every attack before it left
    standing, so list cheap attacks first. AutoAttack's `autoattack` is `standard`, `rand` or a comma list of
    its attacks (apgd-ce, apgd-t, apgd-dlr, fab, fab-t, square).
    """

    evaluators: list[str] = field(default_factory=lambda: ["clean", "pgd", "autoattack"])
    autoattack: str = "apgd-ce,apgd-t,square"  # the `quick` tier (Square with square_queries); `paper`: standard
    eps_sweep: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0])  # multiples of eval_attack.eps
    checks: bool = True  # the gradient-masking self-checks (attacks/checks.py)
    check_examples: int = 100  # how many examples the costlier checks look at
    square_queries: int = 1000  # Square's query budget in a custom AutoAttack list and in the black-box check
    batch_size: int = 256


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
    # The defaults are the `quick` preset on digits.
    pretrain: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=40, lr=0.1))
    prune: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=10, lr=0.1))
    finetune: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=20, lr=0.01))
    train_attack: AttackSettings = field(default_factory=lambda: AttackSettings(steps=10))
    eval_attack: AttackSettings = field(default_factory=lambda: AttackSettings(steps=20, restarts=2))
    trades_beta: float = 6.0
    # ADMM (Ye et al. 2019): its phase's optimiser and budget, and the augmented-Lagrangian schedule
    admm: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=10, lr=0.01))
    admm_rho: float = 1.0  # the `paper` preset uses Ye et al.'s 1e-3; see the README for why quick runs use 1
    admm_rho_growth: float = 1.3
    admm_interval: int = 1  # epochs between Z/U/rho updates
    # Lottery tickets: the retraining of each round, the fraction of survivors pruned per round, and the
    # pretraining epoch the survivors are rewound to (0 = initialisation; 0, 1 and 2 are kept)
    lottery: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=5, lr=0.1))
    lottery_rate: float = 0.5
    lottery_rewind_epoch: int = 1
    train_examples: int | None = None  # None: the whole training split
    eval_examples: int | None = None  # None: the whole test split
    eval: EvalSettings = field(default_factory=EvalSettings)
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    certify: CertifySettings = field(default_factory=CertifySettings)
    verifiable: VerifiableSettings = field(default_factory=VerifiableSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)

    @property
    def effective_pretrain_objective(self) -> str:
        return self.pretrain_objective or self.objective

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Hash of the non-default settings that can affect the trained model (other methods' and unused
        objectives' settings and the evaluation left out: a new evaluator or attack strength re-evaluates, it
        does not retrain)."""
        foreign = {name for method, names in METHOD_SETTINGS.items() if method != self.method for name in names}
        used = {self.objective, self.effective_pretrain_objective}
        read = {name for objective in used for name in OBJECTIVE_SETTINGS.get(objective, ())}
        foreign.update({name for names in OBJECTIVE_SETTINGS.values() for name in names} - read)
        foreign.update(EVAL_SETTINGS)
        return content_key({k: v for k, v in non_default(self).items() if k not in foreign})

    def eval_key(self) -> str:
        """Hash of everything the evaluation of a trained model depends on."""
        d = self.to_dict()
        return content_key({k: d[k] for k in EVAL_SETTINGS})

    def pretrain_settings(self) -> dict[str, Any]:
        """What the dense pretrained model depends on: shared by all methods and sparsities."""
        d = self.to_dict()
        shared = {k: d[k] for k in ("dataset", "arch", "seed", "pretrain", "train_attack", "trades_beta",
                                     "train_examples")}
        shared["objective"] = self.effective_pretrain_objective
        shared.update({k: d[k] for k in OBJECTIVE_SETTINGS.get(shared["objective"], ())})
        return shared

    def pretrain_key(self) -> str:
        return content_key(self.pretrain_settings())

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


# Settings that only the evaluation reads.
EVAL_SETTINGS = ("eval_attack", "eval_examples", "eval", "certify", "verify")

# Settings that only some objectives read (beyond train_attack and trades_beta, which every pretrain key holds).
OBJECTIVE_SETTINGS: dict[str, tuple[str, ...]] = {
    "smoothing": ("smoothing",), "gaussian": ("smoothing",),
    "ibp": ("verifiable",), "crown-ibp": ("verifiable",), "mixtrain": ("verifiable",),
}

# Settings that only one method reads: a change to them leaves every other method's cached runs valid.
METHOD_SETTINGS: dict[str, tuple[str, ...]] = {
    "hydra": ("prune",),
    "admm": ("admm", "admm_rho", "admm_rho_growth", "admm_interval"),
    "lottery": ("lottery", "lottery_rate", "lottery_rewind_epoch"),
}


def non_default(obj: Any, default: Any = None) -> dict[str, Any]:
    """The fields of a (nested) dataclass that differ from a default-built instance."""
    default = type(obj)() if default is None else default
    out: dict[str, Any] = {}
    for f in fields(obj):
        value, base = getattr(obj, f.name), getattr(default, f.name)
        if is_dataclass(value):
            nested = non_default(value, base)
            if nested:
                out[f.name] = nested
        elif value != base:
            out[f.name] = value
    return out


def content_key(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any], source: str) -> RunConfig:
    """Return a copy of cfg with nested overrides ({"pretrain": {"epochs": 3}} or {"pretrain.epochs": 3}).

    Settings are replaced, never mutated in place, so presets and defaults can be shared safely.
    """
    for dotted, value in _flatten(overrides).items():
        *path, leaf = dotted.split(".")
        target = cfg
        parents = []
        for part in path:
            if not _has_field(target, part) or not is_dataclass(getattr(target, part)):
                raise UserError(f"{source}: unknown setting {dotted!r}; valid: {', '.join(setting_names())}")
            parents.append((target, part))
            target = getattr(target, part)
        if not _has_field(target, leaf) or is_dataclass(getattr(target, leaf)):
            raise UserError(f"{source}: unknown setting {dotted!r}; valid: {', '.join(setting_names())}")
        new = dataclasses.replace(target, **{leaf: _coerce(target, leaf, value, dotted, source)})
        for parent, part in reversed(parents):
            new = dataclasses.replace(parent, **{part: new})
        cfg = new
    return cfg


def setting_names(obj: Any = None, prefix: str = "") -> list[str]:
    obj = RunConfig() if obj is None else obj
    names = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            names += setting_names(value, f"{prefix}{f.name}.")
        else:
            names.append(prefix + f.name)
    return names


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _has_field(obj: Any, name: str) -> bool:
    return any(f.name == name for f in fields(obj))


def _coerce(obj: Any, name: str, value: Any, dotted: str, source: str) -> Any:
    """Convert strings from `--set k=v` and YAML scalars to the field's type; None stays None."""
    current = getattr(type(obj)(), name)
    if value is None or isinstance(value, bool):
        return value
    kind = type(current) if current is not None else _optional_type(obj, name)
    try:
        if kind is list:
            items = value if isinstance(value, list) else [v for v in str(value).split(",") if v.strip()]
            element = type(current[0]) if current else str
            return [element(v.strip() if isinstance(v, str) else v) for v in items]
        if kind is bool:
            return str(value).lower() in ("1", "true", "yes")
        return kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{source}: setting {dotted!r} needs a {kind.__name__}, got {value!r}") from None


def _optional_type(obj: Any, name: str) -> type:
    annotation = next(f.type for f in fields(obj) if f.name == name)
    for kind in (int, float, str):
        if kind.__name__ in str(annotation):
            return kind
    return str
