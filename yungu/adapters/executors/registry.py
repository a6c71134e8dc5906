"""Executor kinds by name: ``local``, ``slurm``, ``ray`` -> a factory that builds one.

One registry, filled in one place (:func:`default_registry`), rejecting duplicates, so the
list of execution targets is visible at a glance and a typo in the config is one clear
error. Every factory has the same shape::

    factory(name: str, settings: Mapping[str, object], data_dir: Path, clock: Clock | None) -> Executor

``settings`` is the executor's table from the TOML config (``[executors.<name>]``);
``data_dir`` is the directory this executor may own: :func:`build_executor` gives each
executor its own ``<platform data dir>/executors/<name>/`` so two executors never share
run directories or locks. The Slurm and Ray modules are imported inside their factories,
so a platform that only runs local jobs never imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from yungu.domain.clock import Clock
from yungu.domain.errors import Conflict, InvalidInput
from yungu.ports.executor import Executor

ExecutorFactory = Callable[[str, Mapping[str, Any], Path, Clock | None], Executor]

_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


class ExecutorRegistry:
    """Executor kind -> factory. Registering a kind twice is a bug and raises."""

    def __init__(self) -> None:
        self._factories: dict[str, ExecutorFactory] = {}

    def register(self, kind: str, factory: ExecutorFactory) -> None:
        if kind in self._factories:
            raise Conflict(f"executor kind {kind!r} is already registered")
        self._factories[kind] = factory

    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self._factories))

    def build(self, kind: str, name: str, settings: Mapping[str, Any], data_dir: Path,
              clock: Clock | None = None) -> Executor:
        factory = self._factories.get(kind)
        if factory is None:
            raise InvalidInput(f"unknown executor kind {kind!r}; known kinds: {', '.join(self.kinds())}")
        if not name or not set(name.lower()) <= _NAME_OK:
            raise InvalidInput(f"executor name {name!r} must be non-empty letters, digits, '-' or '_'")
        try:
            return factory(name, settings, data_dir, clock)
        except (ValueError, TypeError, KeyError) as exc:  # a factory's own config parsing
            raise InvalidInput(f"executor {name!r} ({kind}): bad settings: {exc}") from exc


def _local(name: str, settings: Mapping[str, Any], data_dir: Path, clock: Clock | None = None) -> Executor:
    from yungu.adapters.executors.local import LocalExecutor

    return LocalExecutor(name, settings, data_dir, clock=clock)


def _slurm(name: str, settings: Mapping[str, Any], data_dir: Path, clock: Clock | None = None) -> Executor:
    from yungu.adapters.executors.slurm import SlurmConfig, SlurmExecutor

    cfg = {k: v for k, v in settings.items() if k != "kind"}
    cfg.setdefault("workdir", str(data_dir))  # one machine: the data dir is "shared" with the node
    return SlurmExecutor(name, SlurmConfig.from_mapping(cfg), clock)


def _ray(name: str, settings: Mapping[str, Any], data_dir: Path, clock: Clock | None = None) -> Executor:
    from yungu.adapters.executors.ray import RayConfig, RayExecutor

    cfg = {k: v for k, v in settings.items() if k != "kind"}
    return RayExecutor(name, RayConfig.from_mapping(cfg), clock)


def default_registry() -> ExecutorRegistry:
    """The one place where executor kinds are listed."""
    reg = ExecutorRegistry()
    reg.register("local", _local)
    reg.register("slurm", _slurm)
    reg.register("ray", _ray)
    return reg


_DEFAULT = default_registry()


def build_executor(kind: str, name: str, settings: Mapping[str, Any], data_dir: Path,
                   clock: Clock | None = None) -> Executor:
    """Build executor ``name`` of ``kind`` under ``<data_dir>/executors/<name>/``, reading
    time from ``clock`` (the system clock when None)."""
    return _DEFAULT.build(kind, name, settings, Path(data_dir) / "executors" / name, clock)
