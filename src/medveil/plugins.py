"""Third-party schemes, attacks and server models, found through package entry points.

A package joins medveil by naming, in its ``pyproject.toml``, a module whose import registers what
it brings (with :func:`medveil.schemes.register`, :func:`medveil.attacks.register_attack` or
:func:`medveil.nn.register_model`)::

    [project.entry-points."medveil.schemes"]
    toy = "medveil_toy.scheme"

Each registry loads its group the first time it is asked for a name it does not hold or for
everything it holds, so ``keygen``, ``obfuscate``, ``evaluate``, ``attack`` and ``bench`` see plugins
like built-ins, while a run that names a built-in never scans the installed packages. Built-ins are
registered on import, before any lookup, so a plugin cannot take their names. A plugin that fails
to import, or registers a name already taken, is left out with a one-line :class:`PluginWarning`;
it never stops medveil.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, Iterator, Mapping, Sequence, TypeVar

from medveil.errors import MedveilError, ParameterError

GROUPS = ("medveil.schemes", "medveil.attacks", "medveil.models")
_loaded: set[str] = set()


class PluginWarning(UserWarning):
    """A plugin could not be loaded."""


def load_plugins(group: str) -> None:
    """Import every entry point of ``group`` once per process."""
    if group in _loaded:
        return
    _loaded.add(group)
    for entry in entry_points(group=group):
        try:
            entry.load()
        except Exception as exc:  # a broken plugin is reported, not fatal
            warnings.warn(PluginWarning(f"plugin {entry.name!r} ({entry.value}) of {group} was not loaded: "
                                        f"{exc.__class__.__name__}: {exc}"), stacklevel=2)


T = TypeVar("T")


class Registry(Generic[T]):
    """Named things of one kind (schemes, attacks, models): a name is taken once; an unknown one is a one-line error.

    ``missing`` is the :class:`~medveil.errors.MedveilError` subclass raised for an unknown name;
    ``group`` the entry-point group whose plugins join on first need (see the module docstring).
    """

    def __init__(self, kind: str, group: str, missing: type[MedveilError] = ParameterError):
        self.kind, self.group, self.missing = kind, group, missing
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name`` and return it; ``ValueError`` if the name is taken."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        return item

    def remove(self, name: str) -> None:
        """Unregister ``name`` (no error if absent)."""
        self._items.pop(name, None)

    def __getitem__(self, name: str) -> T:
        """Return the item registered as ``name``, loading plugins first; an unknown name is one line naming the others."""
        if name not in self._items:
            load_plugins(self.group)
        try:
            return self._items[name]
        except KeyError:
            raise self.missing(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}") from None

    def __iter__(self) -> Iterator[T]:
        """Iterate over every registered item, plugins' included, in registration order."""
        load_plugins(self.group)
        return iter(list(self._items.values()))

    def names(self) -> list[str]:
        """Every registered name, sorted, plugins' included."""
        load_plugins(self.group)
        return sorted(self._items)


@dataclass(frozen=True)
class Parameter:
    """One parameter a scheme, attack or model declares, so the CLI can offer it (``-p name=value``).

    ``type`` is ``int``, ``float``, ``bool`` or ``str``; ``default`` is what applies when it is not
    given (``None``: decided by the owner, see ``help``).
    """

    name: str
    type: type
    default: Any
    help: str

    def parse(self, text: str, owner: str) -> Any:
        """Return the value ``text`` names, as :attr:`type`; :class:`ParameterError` if it is not one."""
        if self.type is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        else:
            try:
                return self.type(text)
            except ValueError:
                pass
        raise ParameterError(f"{owner}: {self.name} must be a {self.type.__name__}, got {text!r}")


def declared_parameter(declared: Sequence[Parameter], name: str, owner: str) -> Parameter:
    """Return the parameter ``name`` of ``declared``; :class:`ParameterError` naming the others if there is none."""
    for parameter in declared:
        if parameter.name == name:
            return parameter
    known = ", ".join(p.name for p in declared) or "none"
    raise ParameterError(f"{owner} has no parameter {name!r} (its parameters: {known})")


def parse_assignments(assignments: Sequence[str], declared: Sequence[Parameter], owner: str) -> dict[str, Any]:
    """``["levels=50", "bits=12"]`` -> ``{"levels": 50, "bits": 12}`` by ``declared``'s types."""
    values: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep:
            raise ParameterError(f"{owner}: parameters are given as name=value, got {assignment!r}")
        values[name] = declared_parameter(declared, name, owner).parse(text, owner)
    return values


def describe_parameters(declared: Sequence[Parameter]) -> str:
    """One line per parameter for help texts: ``name (type, default): help``."""
    return "; ".join(f"{p.name} ({p.type.__name__}{'' if p.default is None else f', default {p.default}'}): {p.help}"
                     for p in declared)


def merge(given: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters from ``-p`` assignments and from familiar flags; the same name twice is an error."""
    clash = sorted(set(given) & {k for k, v in flags.items() if v is not None})
    if clash:
        raise ParameterError(f"{', '.join(clash)} given twice (as a flag and with -p)")
    return {**given, **{k: v for k, v in flags.items() if v is not None}}
