"""Scenario files for the scheduler benchmarks, with the shared data found wherever it lives.

The scenario files name the data as ``../../shared/data/...`` relative to ``scenarios/`` (the
layout of the main checkout). From a checkout elsewhere (a git worktree) set
``YUNGU_SHARED_DATA`` (or pass ``data=``): those paths are then rewritten to that folder.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from yungu.adapters.traces.scenario import LoadedScenario, load_scenario

REPO = Path(__file__).resolve().parents[1]
MARK = "shared/data/"


def data_root(data: str | Path | None = None) -> Path:
    got = data or os.environ.get("YUNGU_SHARED_DATA")
    return Path(got) if got else REPO.parent / "shared" / "data"


def _rebase(v: Any, base: Path, root: Path) -> Any:
    if isinstance(v, dict):
        return {k: _rebase(x, base, root) for k, x in v.items()}
    if isinstance(v, list):
        return [_rebase(x, base, root) for x in v]
    if isinstance(v, str) and MARK in v and not Path(v).is_absolute():
        return str(root / v.split(MARK, 1)[1])
    if isinstance(v, str) and v and not Path(v).is_absolute() and (base / v).exists():
        return str((base / v).resolve())
    return v


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml(k)


def dump(doc: dict[str, Any]) -> str:
    """A scenario document back to TOML (tables, arrays of tables, inline values)."""
    out: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        plain = {k: v for k, v in d.items() if not (isinstance(v, dict) and k in ("clusters", "deadlines"))}
        for k, v in plain.items():
            out.append(f"{_key(k)} = {_toml(v)}")
        for k in ("clusters", "deadlines"):
            if isinstance(d.get(k), dict):
                out.append(f"[{prefix}.{k}]")
                for kk, vv in d[k].items():
                    out.append(f"{_key(kk)} = {_toml(vv)}")

    for name, v in doc.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                out.append(f"[[{name}]]")
                table(name, item)
        elif isinstance(v, dict):
            out.append(f"[{name}]")
            table(name, v)
        out.append("")
    return "\n".join(out)


def read_doc(path: Path, data: str | Path | None = None) -> dict[str, Any]:
    """The scenario file as a document with every file path made absolute."""
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    return _rebase(doc, path.parent, data_root(data))  # type: ignore[no-any-return]


def load_doc(doc: dict[str, Any], name: str = "scenario") -> LoadedScenario:
    """Load a (possibly modified) scenario document through the product's own loader."""
    d = Path(tempfile.mkdtemp(prefix="yungu-sched-bench-"))
    p = d / f"{name}.toml"
    p.write_text(dump(doc), encoding="utf-8")
    return load_scenario(p)


def load(path: str | Path, data: str | Path | None = None) -> LoadedScenario:
    return load_doc(read_doc(Path(path), data), Path(path).stem)
