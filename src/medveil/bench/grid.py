"""The privacy-utility benchmark grid: schemes × parameters × (utility, attacks), cached per cell.

A profile lists the settings to compare and, per scheme, the attacks that apply. Each cell is one
utility run (setting, seed) — :func:`medveil.evaluation.utility.run_one`, the one training loop —
or one attack (setting, attack, attacker data) — :func:`medveil.evaluation.privacy.run_attack`
through a black box. Finished cells are stored as JSON under ``out/cells/`` named by dataset,
scheme, parameters and seed, so a re-run computes only what is missing. A cell that raises is
recorded as failed (and retried on the next run); the rest of the grid goes on.

Every cell has its own key: utility and attacks see different keys of the same setting, so the
numbers describe the setting, not one key. The keys derive from one random secret kept in the
output folder (``bench.secret``, 0600) and the cell's name, so a cell computed again, in another
process or on a Dask worker (``scheduler``), sees the same key and gives the same numbers.
"""

from __future__ import annotations

import json
import secrets
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from medveil import parallel
from medveil._files import atomic_path, slug, write_json
from medveil.data import ImageDataset, group_split
from medveil.errors import InputError
from medveil.evaluation.utility import run_one
from medveil.keys import SECRET_BYTES, derive_secret
from medveil.schemes import Setting
from medveil.training.loop import TrainConfig


@dataclass(frozen=True)
class Profile:
    """How much to run: image size, classifier epochs and seeds, attacker U-Net epochs, and the settings.

    Every registered attack that applies to a setting's scheme (of those named in ``attacks``, if
    given) runs with each of its attacker data, except what ``leave_out`` names: ``(setting, attack,
    attacker data)`` triples, the setting given by its scheme (``"tanaka"``) or its label
    (``"intensity levels=256"``), in which ``"*"`` stands for any. ``options`` gives attacks their
    declared parameters (``{"kerckhoffs-unet": {"keys": 32}}``); such cells are cached apart.
    ``models``: the server models each setting is trained with, where made for its scheme (a model's
    ``schemes``; plain images: paper NB's CNN, the baseline); a setting's utility is its best model's.
    """

    name: str
    size: int
    epochs: int
    seeds: int
    attack_epochs: int
    settings: tuple[Setting, ...]
    leave_out: frozenset[tuple[str, str, str]] = frozenset()
    attacks: frozenset[str] | None = None
    options: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    models: tuple[str, ...] = ("cnn",)

    def options_of(self, attack: str) -> dict[str, Any]:
        """Return the declared options this profile gives ``attack`` (empty where it gives none)."""
        return dict(dict(self.options).get(attack, ()))


def _settings(*specs: tuple[str, dict]) -> tuple[Setting, ...]:
    return tuple(Setting(scheme, tuple(sorted(params.items()))) for scheme, params in specs)


PROFILES = {
    "quick": Profile("quick", size=64, epochs=5, seeds=1, attack_epochs=4, settings=_settings(
        ("plain", {}), ("intensity", {"levels": 256}), ("intensity", {"levels": 50}), ("skk", {}),
        ("skk-smooth", {"block": 4}), ("tanaka", {"block": 4}), ("structural", {"size": 50})),
        # No U-Net where a chosen-plaintext attack is already exact, none on the (larger) prior set, and
        # no Kerckhoffs training: the demo's ten minutes.
        leave_out=frozenset({("intensity", "learned-reconstruction", "*"), ("tanaka", "learned-reconstruction", "*"),
                             ("*", "learned-reconstruction", "prior"), ("*", "kerckhoffs-unet", "*")})),
    "full": Profile("full", size=64, epochs=30, seeds=2, attack_epochs=12, models=("cnn", "matched"), settings=_settings(
        ("plain", {}), ("intensity", {"levels": 256}), ("intensity", {"levels": 150}), ("intensity", {"levels": 50}),
        ("skk", {}), ("skk-smooth", {"block": 3}), ("skk-smooth", {"block": 4}), ("skk-smooth", {"block": 5}),
        ("tanaka", {"block": 4}), ("structural", {"size": 32}), ("structural", {"size": 50}),
        ("block-shuffle", {"block": 8}), ("block-shuffle", {"block": 8, "remap": 1, "noise": 6}),
        ("block-shuffle", {"block": 8, "remap": 1, "noise": 16}), ("warp-smooth", {"size": 32, "block": 4})),
        # U-Nets train on prior data only (the stronger attacker: a column reports its strongest data), and
        # none where an attack of the same threat model already decrypts exactly (Tanaka: chosen-plaintext
        # and slot-correlation; SKK: position-correlation; intensity N=256: chosen-plaintext and
        # code-cooccurrence). Keeps the grid near its time budget.
        leave_out=frozenset({("*", "learned-reconstruction", "public"), ("*", "kerckhoffs-unet", "public"),
                             ("tanaka", "learned-reconstruction", "*"), ("tanaka", "kerckhoffs-unet", "*"),
                             ("skk", "kerckhoffs-unet", "*"), ("intensity levels=256", "learned-reconstruction", "*"),
                             ("intensity levels=256", "kerckhoffs-unet", "*")})),
}


@dataclass(frozen=True)
class Cell:
    """One unit of work of the grid."""

    kind: str  # "utility" or "attack"
    setting: Setting
    seed: int = 0
    attack: str = ""
    attacker_data: str = ""
    options: tuple[tuple[str, Any], ...] = ()  # the attack's own parameters, when not its defaults
    model: str = "cnn"  # utility: the server model

    def file_name(self, dataset: str) -> str:
        """Return the cached cell's file name under ``dataset``: setting, then seed and model, or attack and data."""
        tail = ([f"seed{self.seed}"] + ([self.model] if self.model != "cnn" else []) if self.kind == "utility"
                else [self.attack, self.attacker_data])
        return slug(dataset, self.setting.slug, *tail, *(f"{k}{v}" for k, v in self.options)) + ".json"


def cells_of(profile: Profile) -> list[Cell]:
    """Return utility cells per setting and seed, then one attack cell per applicable registered attack and data."""
    from medveil.attacks import applicable_attacks
    from medveil.nn import model_spec

    made_for = {model: model_spec(model).schemes for model in profile.models}
    cells = [Cell("utility", s, seed, model=model) for s in profile.settings for model in profile.models
             if s.scheme in (made_for[model] or (s.scheme,)) for seed in range(profile.seeds)]
    cells += [Cell("attack", s, attack=spec.name, attacker_data=data,
                   options=tuple(sorted(profile.options_of(spec.name).items()))) for s in profile.settings
              for spec in applicable_attacks(s.scheme, dict(s.params))
              if profile.attacks is None or spec.name in profile.attacks
              for data in spec.attacker_data if not _left_out(profile, s, spec.name, data)]
    return cells


def trains(cell: Cell) -> bool:
    """Whether ``cell`` trains a network (a utility cell, or an attack that trains): minutes, where most take seconds."""
    from medveil.attacks import attack_spec

    return cell.kind == "utility" or attack_spec(cell.attack).trains


def _left_out(profile: Profile, setting: Setting, attack: str, data: str) -> bool:
    return any(where in ("*", setting.scheme, setting.label) and name in ("*", attack) and given in ("*", data)
               for where, name, given in profile.leave_out)


def grid_secret(out_dir: Path) -> bytes:
    """Return the output folder's secret that every cell's key derives from, made on first use (0600)."""
    path = Path(out_dir) / "bench.secret"
    if not path.exists():
        with atomic_path(path) as tmp:
            tmp.write_text(secrets.token_hex(SECRET_BYTES))
            tmp.chmod(0o600)
    return bytes.fromhex(path.read_text().strip())


def run_cell(cell: Cell, dataset: ImageDataset, split: np.ndarray, profile: Profile, figures: Path,
             secret: bytes) -> dict:
    """Compute one cell under its key (derived from ``secret`` and the cell's name).

    Returns what is cached: the row, the key's fingerprint and, for attacks, the figure's file name.
    """
    name = cell.file_name(dataset.name)
    key = None if cell.setting.scheme == "plain" else cell.setting.new_key(dataset.channels, derive_secret(secret, name))
    fingerprint = key.fingerprint if key else None
    if cell.kind == "utility":
        config = TrainConfig(epochs=profile.epochs, seed=cell.seed, progress=False)
        setting = replace(cell.setting, key=key)
        return {"row": run_one(dataset, split, setting, cell.seed, cell.model, config, augment=False)["row"],
                "key": fingerprint}
    from medveil.attacks import attack_spec
    from medveil.evaluation.privacy import attack_figure, run_attack

    spec = attack_spec(cell.attack)
    if key is None:
        raise InputError(f"{cell.attack}: attacks need a scheme; plain images have none to attack")
    attack = spec.create(key.scheme, key.params, profile.attack_epochs, False, **dict(cell.options))
    row, target, obfuscated, reconstructed = run_attack(attack, spec.capability, key, dataset, cell.attacker_data)
    figure = figures / name.replace(".json", ".png")
    attack_figure(row, target, obfuscated, reconstructed, figure, examples=3)
    return {"row": row, "figure": figure.name, "key": fingerprint}


def run_grid(dataset: ImageDataset, profile: Profile, out_dir: Path, progress: bool = True,
             compute: Callable[..., dict] = run_cell, scheduler: str | None = None, workers: int = 2,
             threads: int | None = None, device: str | None = None) -> list[dict]:
    """Every cell of ``profile`` on ``dataset``: cached results, fresh ones, and failures.

    Returns one record per cell, in :func:`cells_of` order: ``{"cell", "status" ("cached", "done"
    or "failed"), "result" or "error", "seconds"}``. ``compute`` is the function that runs a cell
    (replaceable in tests). ``scheduler`` runs the missing cells as Dask tasks through the one runner
    (:func:`medveil.parallel.run`: a cell per task, those that train first;
    ``"local"``: a LocalCluster of ``workers`` processes; or a scheduler's address, whose workers
    write figures into ``out_dir`` too); this process alone writes the cached cells. ``threads``
    fixes torch's threads per cell (default: all cores serially, the cores shared out on a
    LocalCluster); the last digits of a training run depend on it. ``device`` (``auto``, ``cpu``,
    ``cuda``; default the process default) is where cells train, resolved where they run.
    """
    out_dir = Path(out_dir)
    (out_dir / "cells").mkdir(parents=True, exist_ok=True)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    split = group_split(dataset.labels, dataset.groups)
    secret = grid_secret(out_dir)
    cells = cells_of(profile)
    records: list[dict | None] = [None] * len(cells)
    todo = []
    for index, cell in enumerate(cells):
        path = out_dir / "cells" / cell.file_name(dataset.name)
        if path.exists():
            records[index] = {"cell": cell, "status": "cached", "result": json.loads(path.read_text())}
        else:
            todo.append(index)
    bar = tqdm(total=len(todo), desc=f"bench {profile.name}", unit="cell", disable=not progress)

    def finish(index: int, outcome: dict) -> None:
        cell = cells[index]
        if outcome["status"] == "done":
            write_json(out_dir / "cells" / cell.file_name(dataset.name), outcome["result"])
        records[index] = {"cell": cell, **outcome}
        bar.update()

    shared = (dataset, split, profile, out_dir / "figures")
    if scheduler is None:
        for index in todo:
            cell = cells[index]
            bar.set_postfix_str(f"{cell.setting.label} {cell.attack or f'utility {cell.model} seed {cell.seed}'}")
            finish(index, _computed(compute, cell, shared, secret, threads, device))
    elif todo:
        from medveil.parallel.cluster import local_threads

        if threads is None and scheduler == "local":
            threads = local_threads(workers)
        # Cells that train first, one cell per task: a minutes-long cell started last keeps one worker
        # busy while the others wait. The order changes no cell's numbers (each has its own key and seed).
        todo.sort(key=lambda index: not trains(cells[index]))
        # the dataset and the secret travel to each worker once, not per cell
        for job, outcome, error in parallel.run(_computed_cell, (compute, shared, secret, threads, device),
                                                [(cells[index],) for index in todo], workers, scheduler, per_task=1):
            finish(todo[job], outcome if error is None else _failed(error))
    bar.close()
    return [record for record in records if record is not None]


def _computed_cell(compute: Callable[..., dict], shared: tuple, secret: bytes, threads: int | None,
                   device: str | None, cell: Cell) -> dict:
    """:func:`_computed` with the arguments in the order :func:`medveil.parallel.run` gives them."""
    return _computed(compute, cell, shared, secret, threads, device)


def _failed(error: BaseException) -> dict:
    return {"status": "failed", "error": f"{error.__class__.__name__}: {error}",
            "trace": "".join(traceback.format_exception(error, limit=3))}


def _computed(compute: Callable[..., dict], cell: Cell, shared: tuple, secret: bytes, threads: int | None,
              device: str | None) -> dict:
    """``compute(cell, *shared, secret)`` as a record.

    ``{"status": "done", "result"}`` or ``{"status": "failed", "error", "trace"}``; the same in this process and on
    a Dask worker.
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
        parallel.set_cores(threads)  # and per-image work (structural's tracing) as many processes
    if device is not None:
        from medveil.nn.device import set_default_device

        set_default_device(device)
    started = time.perf_counter()
    try:
        result = compute(cell, *shared, secret)
    except Exception as exc:  # reported in the table; the grid goes on
        return _failed(exc)
    result["seconds"] = time.perf_counter() - started
    return {"status": "done", "result": result}
