"""The configuration every distillation method shares: :class:`DistillerConfig`.

Each method subclasses it once, next to its distiller, with its own options and
``DEFAULT_WEIGHTS`` (the method's loss terms and their default weights: written there and
nowhere else), and registers the pair with :func:`slkd.distill.register_distiller`. The
engine's ``distill:`` YAML node is the registered dataclass of ``distill.method``, so a key of
the node is a field of the method's class, checked with its path (``distill.mscn_c: …``).

Plain Python works the same without YAML::

    cfg = SLKDConfig(irl=False, loss_weights={"kl": 0.0})   # or distill_config("slkd", …)
    cfg.loss_weights      # {'pix': 1.0, 'kl': 0.0, 'nc': 0.01, 'et': 0.03, 'img': 0.0}
    cfg.teacher_roles()   # ('a',): which teachers the method runs with these settings
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Mapping

from slkd.errors import ConfigError

__all__ = ["DistillerConfig", "check_weight"]


def check_weight(term: str, value, path: str = "distill") -> float:
    """A loss weight as a float: a finite number >= 0, or a :class:`ConfigError` with its key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{_join(path, 'loss_weights')}.{term}: expected a finite number >= 0, got {value!r}")
    return float(value)


@dataclass
class DistillerConfig:
    """Base of the method configs: the method's name and its loss weights.

    ``loss_weights`` may name only some terms (``{img: 1.0}``); after construction it holds
    every term of ``DEFAULT_WEIGHTS`` with the given ones replaced, in the order of
    ``DEFAULT_WEIGHTS``. A term the method does not have is refused.
    """

    #: the name the method is registered under; filled in from the class (another is refused)
    method: str = ""
    #: term (without ``loss_``) → weight of L = Σ weight·term
    loss_weights: dict[str, float] = field(default_factory=dict)

    #: the method's loss terms and their default weights; one mapping per method class
    DEFAULT_WEIGHTS: ClassVar[Mapping[str, float]] = MappingProxyType({"pix": 1.0})
    #: teacher roles the method runs (``"a"``: degraded → clean, ``"b"``: clean → clean); a
    #: method whose roles depend on its settings overrides :meth:`teacher_roles` instead
    TEACHERS: ClassVar[tuple[str, ...]] = ("a",)
    #: set by :func:`slkd.distill.register_distiller`
    METHOD: ClassVar[str] = ""
    #: options of other methods that the engine's ``distill:`` node carried and this method
    #: does not read (e.g. ``drl`` after ``distill.method=fitnet``); set by the engine, logged
    ignored_options = ()

    def __post_init__(self) -> None:
        registered = type(self).METHOD
        if not registered:
            raise ConfigError(f"{type(self).__name__} is not the config of a registered distillation "
                              "method (slkd.distill.register_distiller)")
        if self.method and self.method != registered:
            raise ConfigError(f"distill.method: {type(self).__name__} configures {registered!r}, "
                              f"not {self.method!r}")
        self.method = registered
        self.loss_weights = self._resolve_weights(self.loss_weights)
        self.validate()

    def _resolve_weights(self, given: Mapping[str, float]) -> dict[str, float]:
        defaults = type(self).DEFAULT_WEIGHTS
        unknown = [t for t in given if t not in defaults]
        if unknown:
            raise ConfigError(f"distill.loss_weights: unknown term(s) {', '.join(map(str, unknown))} for "
                              f"method {self.method}; its terms: {', '.join(defaults)}")
        given = {t: check_weight(t, v) for t, v in given.items()}
        return {t: float(given.get(t, w)) for t, w in defaults.items()}

    # ------------------------------------------------------------------ checks
    def validate(self, path: str = "distill") -> None:
        """Refuse impossible settings with the key's path. Subclasses extend it (and call it)."""
        if not any(w > 0 for w in self.loss_weights.values()):
            raise ConfigError(f"{_join(path, 'loss_weights')}: every loss weight of {self.method} "
                              f"({', '.join(self.loss_weights)}) is 0")

    # ------------------------------------------------------------------ teachers
    def teacher_roles(self) -> tuple[str, ...]:
        """The teachers this method runs with these settings: the one rule for the engine's
        config check, which teachers ``slkd distill`` loads, and what the distiller holds. A
        teacher whose terms all have weight 0 is not listed (it is neither needed nor loaded)."""
        return type(self).TEACHERS

    def missing_teacher(self, role: str) -> str:
        """What to say when teacher ``role`` is needed but not given."""
        return f"method {self.method!r} needs Teacher {role.upper()} (teachers.{role})"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
