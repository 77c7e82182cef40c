"""One TOML file for a repeatable run of the gateway or ``medveil pull``; every field is also a flag.

::

    key = "hospital.key"            # from `medveil keygen`
    workdir = "gateway"             # spool, quarantine, journal, audit log (inside the hospital)
    to = ["dicom://ORTHANC@127.0.0.1:4242", "folder:/data/outgoing"]

    [gate]
    obfuscate = true                # false: de-identify only (`medveil deidentify`)
    burned_in_text = "refuse"       # refuse | mask | off
    keep_descriptors = false
    allow_broken = false

    [listen]                        # medveil gateway
    ae_title = "MEDVEIL"
    host = "127.0.0.1"
    port = 11112
    calling_aes = ["CT01", "PACS"]  # empty: any

    [pull]                          # medveil pull
    source = "dicom://PACS@10.0.0.5:104"

    [limits]
    max_decoded_mb = 2048           # what one instance may decode to
    batch = 32                      # instances per association / request

    [log]
    level = "INFO"
    json = false

A flag given on the command line wins over the file. :func:`load` checks every field and says in one
line which field of which file is wrong.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medveil._logs import LEVELS
from medveil.errors import InputError
from medveil.io.burned_in import POLICIES


@dataclass
class PipelineConfig:
    """The whole pipeline's options, as the file and the flags give them (see the module docstring)."""

    key: Path | None = None
    workdir: Path = Path("medveil-gateway")
    to: list[str] = field(default_factory=list)
    obfuscate: bool = True
    burned_in_text: str = "refuse"
    keep_descriptors: bool = False
    allow_broken: bool = False
    ae_title: str = "MEDVEIL"
    host: str = "127.0.0.1"
    port: int = 11112
    calling_aes: list[str] = field(default_factory=list)
    source: str | None = None
    max_decoded_mb: int = 2048
    batch: int = 32
    log_level: str = "WARNING"
    log_json: bool = False

    def merged(self, **flags: Any) -> "PipelineConfig":
        """Return this configuration with every flag that was given (not None) in place of the file's value."""
        given = {name: value for name, value in flags.items() if value is not None and value != []}
        config = dataclasses.replace(self, **given)
        check(config, "command line")
        return config


# (section, name in the file) -> field; "" is the top level.
_FIELDS = {
    ("", "key"): "key", ("", "workdir"): "workdir", ("", "to"): "to",
    ("gate", "obfuscate"): "obfuscate", ("gate", "burned_in_text"): "burned_in_text",
    ("gate", "keep_descriptors"): "keep_descriptors", ("gate", "allow_broken"): "allow_broken",
    ("listen", "ae_title"): "ae_title", ("listen", "host"): "host", ("listen", "port"): "port",
    ("listen", "calling_aes"): "calling_aes", ("pull", "source"): "source",
    ("limits", "max_decoded_mb"): "max_decoded_mb", ("limits", "batch"): "batch",
    ("log", "level"): "log_level", ("log", "json"): "log_json",
}
_SECTIONS = {section for section, _ in _FIELDS if section}


def load(path: str | Path) -> PipelineConfig:
    """Return the configuration in the TOML file ``path``; :class:`InputError` naming the file and field if it is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not TOML: {exc}") from None
    values: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict):
            if name not in _SECTIONS:
                raise InputError(f"{path}: unknown section [{name}] (known: {', '.join(sorted(_SECTIONS))})")
            for sub, item in value.items():
                values[_field(path, name, sub)] = item
        else:
            values[_field(path, "", name)] = value
    for name in ("key", "workdir"):  # relative to the file, so a run does not depend on where it starts
        if isinstance(values.get(name), str):
            values[name] = path.parent / values[name]
    config = PipelineConfig()
    for name, value in values.items():
        setattr(config, name, value)
    check(config, str(path))
    return config


def _field(path: Path, section: str, name: str) -> str:
    if (section, name) not in _FIELDS:
        known = ", ".join(f"{s}.{n}" if s else n for s, n in _FIELDS if s == section)
        raise InputError(f"{path}: unknown field {_dotted(section, name)} (known here: {known})")
    return _FIELDS[(section, name)]


def _dotted(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def _where(name: str) -> str:
    section, key = next(pair for pair, attr in _FIELDS.items() if attr == name)
    return _dotted(section, key)


def check(config: PipelineConfig, origin: str) -> None:
    """Every field of ``config`` of the right type and in range; one line naming ``origin`` and the field if not."""
    from medveil.gateway.destinations import destination

    def wrong(name: str, why: str) -> InputError:
        return InputError(f"{origin}: {_where(name)}: {why}, got {getattr(config, name)!r}")

    for name, kind in (("obfuscate", bool), ("keep_descriptors", bool), ("allow_broken", bool), ("log_json", bool)):
        if not isinstance(getattr(config, name), kind):
            raise wrong(name, "must be true or false")
    for name in ("port", "max_decoded_mb", "batch"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise wrong(name, "must be a whole number of at least 1")
    if config.port > 65535:
        raise wrong("port", "must be at most 65535")
    for name in ("key", "workdir"):
        if getattr(config, name) is not None and not isinstance(getattr(config, name), (str, Path)):
            raise wrong(name, "must be a path")
    if config.key is not None:
        config.key = Path(config.key)
    config.workdir = Path(config.workdir)
    if config.burned_in_text not in POLICIES:
        raise wrong("burned_in_text", f"must be one of {', '.join(POLICIES)}")
    if config.log_level not in LEVELS:
        raise wrong("log_level", f"must be one of {', '.join(LEVELS)}")
    if not isinstance(config.ae_title, str) or not 1 <= len(config.ae_title) <= 16:
        raise wrong("ae_title", "must be an AE title of 1 to 16 characters")
    for name in ("to", "calling_aes"):
        value = getattr(config, name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong(name, "must be a list of strings")
    for spec in config.to:
        try:
            destination(spec)
        except InputError as exc:
            raise InputError(f"{origin}: {_where('to')}: {exc}") from None
    if config.source is not None:
        from medveil.gateway.destinations import dicom_node

        try:
            dicom_node(config.source)
        except InputError as exc:
            raise InputError(f"{origin}: {_where('source')}: {exc}") from None
