"""The registry of distillation methods and :func:`build_distiller`, their one constructor.

A method is a :class:`~slkd.distill.Distiller` subclass and its
:class:`~slkd.distill.DistillerConfig` subclass, registered together in one file::

    @dataclass
    class MarginConfig(DistillerConfig):
        DEFAULT_WEIGHTS = MappingProxyType({"pix": 1.0, "margin": 0.1})
        margin: float = 0.05

    @register_distiller("margin", MarginConfig)
    class MarginDistiller(Distiller):
        def compute_terms(self, x, y):
            out, _ = self.run_student(x)
            a_out, _ = self.run_teacher("a", x)
            return {"pix": self.pixel_term(out, y),
                    "margin": ((out - a_out).abs() - self.cfg.margin).clamp(min=0).mean()}

After the import of that file (``slkd distill --plugin margin.py``), ``distill: {method: margin,
margin: 0.1}`` is a valid config node and ``slkd distill`` trains it; nothing else changes.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Callable, Mapping

from torch import nn

from slkd.distill.base import Distiller
from slkd.distill.config import DistillerConfig
from slkd.errors import ConfigError, SlkdError

__all__ = [
    "DEFAULT_METHOD",
    "build_distiller",
    "config_class",
    "distill_config",
    "distiller_class",
    "register_distiller",
    "registered_methods",
]

#: the method of a ``distill:`` node that names none: the one the study measured best (FAKD with
#: its teacher-output term, on a student cut from Teacher A; BENCHMARKS.md §12). SLKD is one word
#: away: ``distill.method=slkd`` / ``--method slkd``
DEFAULT_METHOD = "fakd"

_CONFIGS: dict[str, type[DistillerConfig]] = {}
_DISTILLERS: dict[str, type[Distiller]] = {}


def register_distiller(name: str,
                       config_cls: type[DistillerConfig]) -> Callable[[type[Distiller]], type[Distiller]]:
    """Class decorator: register a :class:`Distiller` subclass as method ``name``, configured by
    the dataclass ``config_cls`` (a :class:`DistillerConfig` subclass used by no other method).

    The distiller is built as ``cls(cfg, student, teachers, pixel_loss)`` with ``teachers``
    holding exactly the roles of ``cfg.teacher_roles()``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a method name is a plain word (letters, digits, _), got {name!r}")
    if not (isinstance(config_cls, type) and issubclass(config_cls, DistillerConfig) and is_dataclass(config_cls)):
        raise TypeError(f"the config of {name!r} must be a dataclass subclassing DistillerConfig, "
                        f"got {config_cls!r}")

    def decorate(cls: type[Distiller]) -> type[Distiller]:
        if not (isinstance(cls, type) and issubclass(cls, Distiller)):
            raise TypeError(f"register_distiller({name!r}) decorates a Distiller subclass, got {cls!r}")
        if name in _DISTILLERS and (_DISTILLERS[name] is not cls or _CONFIGS[name] is not config_cls):
            raise ValueError(f"a distillation method named {name!r} is already registered "
                             f"({_DISTILLERS[name].__name__})")
        owner = config_cls.__dict__.get("METHOD")  # its own, not one inherited from a parent config
        if owner and owner != name:
            raise ValueError(f"{config_cls.__name__} already configures method {owner!r}; give "
                             f"{name!r} its own config class (a subclass will do)")
        config_cls.METHOD = name
        cls.method = name
        _CONFIGS[name] = config_cls
        _DISTILLERS[name] = cls
        return cls

    return decorate


def registered_methods() -> tuple[str, ...]:
    """Names of the registered methods, in registration order."""
    return tuple(_DISTILLERS)


def config_class(method: str) -> type[DistillerConfig]:
    """The config dataclass of ``method``; an unknown name raises and lists the known ones."""
    try:
        return _CONFIGS[method]
    except (KeyError, TypeError):
        raise SlkdError(f"unknown distillation method {method!r}; known methods: "
                        f"{', '.join(_CONFIGS)}") from None


def distiller_class(method: str) -> type[Distiller]:
    config_class(method)  # the error for an unknown name
    return _DISTILLERS[method]


def option_names(cls: type[DistillerConfig]) -> list[str]:
    """The keys a ``distill:`` node may give for the method configured by ``cls``."""
    return [f.name for f in fields(cls) if f.init]


def distill_config(method: str = DEFAULT_METHOD, **options) -> DistillerConfig:
    """The config of ``method`` with ``options`` (its defaults for the rest), checked:
    ``distill_config("fitnet", loss_weights={"feature": 0.01})``."""
    cls = config_class(method)
    unknown = sorted(set(options) - set(option_names(cls)))
    if unknown:
        raise ConfigError(f"distill: method {method!r} has no option(s) {', '.join(unknown)}; its "
                          f"options: {', '.join(n for n in option_names(cls) if n != 'method')}")
    return cls(method=method, **options)


def _given_teachers(teachers, teacher_b) -> dict[str, nn.Module]:
    if teachers is None:
        given: dict[str, nn.Module] = {}
    elif isinstance(teachers, nn.Module):
        given = {"a": teachers}
    elif isinstance(teachers, Mapping):
        given = {str(role): t for role, t in teachers.items() if t is not None}
    else:
        raise TypeError("teachers: a mapping role → module (e.g. {'a': A, 'b': B}), "
                        f"got {type(teachers).__name__}")
    if teacher_b is not None:
        if "b" in given:
            raise TypeError("Teacher B given twice (in teachers and as teacher_b)")
        given["b"] = teacher_b
    return given


def build_distiller(
    cfg: DistillerConfig | str,
    student: nn.Module,
    teachers: Mapping[str, nn.Module | None] | nn.Module | None = None,
    teacher_b: nn.Module | None = None,
    *,
    pixel_loss: str = "l1",
) -> Distiller:
    """The distiller of ``cfg.method`` for ``student`` and frozen ``teachers``.

    ``cfg`` is a method's config (:func:`distill_config`, ``SLKDConfig(...)``, the engine's
    ``distill:`` node) or just a method name for its defaults. ``teachers`` maps roles to
    networks, ``{"a": teacher_a, "b": teacher_b}``; ``build_distiller(cfg, student, teacher_a,
    teacher_b)`` reads the same. A teacher the method does not use with these settings
    (:meth:`DistillerConfig.teacher_roles`) is not held, so it may be left out. ``pixel_loss``
    is L_pix: ``l1``, ``mse`` or ``charbonnier`` (``train.loss``, :func:`slkd.losses.pixel_loss`).

    Raises :class:`SlkdError` for impossible combinations: an unknown method or pixel loss, a
    missing teacher, wrong tap names, mismatched shapes, and what the method itself refuses.
    """
    if isinstance(cfg, str):
        cfg = distill_config(cfg)
    if not isinstance(cfg, DistillerConfig):
        raise TypeError(f"build_distiller takes a method's config or name, got {type(cfg).__name__}")
    cls = distiller_class(cfg.method)
    if not isinstance(cfg, config_class(cfg.method)):
        raise SlkdError(f"method {cfg.method!r} is configured by {config_class(cfg.method).__name__}, "
                        f"got a {type(cfg).__name__}")
    given = _given_teachers(teachers, teacher_b)
    roles = cfg.teacher_roles()
    for role in roles:
        if given.get(role) is None:
            raise SlkdError(cfg.missing_teacher(role))
    try:
        return cls(cfg, student, {role: given[role] for role in roles}, pixel_loss)
    except ValueError as exc:  # parameter checks of the extractors, SCMs and loss functions
        raise SlkdError(f"distill ({cfg.method}): {exc}") from exc
