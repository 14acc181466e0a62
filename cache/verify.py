"""Full verification of a render or feature store, and the repair that resets bad objects.

``verify_store`` re-reads every array of every done object against its digests
(:mod:`cache.integrity`), checks the done flags against the attrs and the digests against the
fingerprint, and lists every problem by object id. ``repair_store`` clears the done flags of the
bad objects, so the stage that wrote the store redoes exactly those on its next run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cache import integrity
from cache.feature_store import derived_problems
from cache.zarr_io import StoreError, exists, half_made, missing_note, open_group

#: kind of store -> (the attrs key of its settings hash, the stage that writes it)
KINDS = {"render": ("config_key", "`fnerf-pipeline render` (same options)"),
         "feature": ("store_key", "`fnerf-pipeline distill-cache` (same options)")}


@dataclass
class StoreCheck:
    """What :func:`verify_store` found."""

    path: str
    kind: str
    n_objects: int
    n_done: int
    problems: list[integrity.Problem] = field(default_factory=list)
    store_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    source: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and not self.store_problems

    @property
    def bad_indices(self) -> list[int]:
        return sorted({p.index for p in self.problems})

    @property
    def rerun(self) -> str:
        if self.source.startswith("import-"):  # imported stores are rewritten by `import`
            return "`fnerf-pipeline import` (same options)"
        return KINDS[self.kind][1]


def store_kind(attrs: dict, path: str | Path) -> str:
    """``render`` or ``feature`` from the attrs, or a StoreError for anything else."""
    for kind, (key, _) in KINDS.items():
        if key in attrs:
            if "content_arrays" not in attrs:
                raise StoreError(f"{path}: a {kind} store of an older format (no per-array "
                                 "digests); re-create it with --overwrite")
            return kind
    raise StoreError(f"{path}: not a render or feature store of this pipeline (no "
                     "config_key / store_key in its attrs)")


def verify_store(path: str | Path) -> StoreCheck:
    """Check every done object of the store at ``path`` (see module doc)."""
    t0 = time.perf_counter()
    path = str(path)
    if not exists(path) or half_made(path):
        raise StoreError(f"{path}: no store here{missing_note(path)}; re-run the stage that "
                         "writes it")
    group = open_group(path)
    attrs = dict(group.attrs)
    kind = store_kind(attrs, path)
    content = list(attrs["content_arrays"])
    missing = [n for n in (*content, integrity.DIGESTS, integrity.DONE) if n not in group]
    if missing:
        raise StoreError(f"{path}: arrays {missing} are gone; the store cannot be repaired - "
                         "delete it and re-run the stage that writes it")
    n = int(group[integrity.DONE].shape[0])
    ids = list(attrs.get("object_ids") or [str(i) for i in range(n)])
    check = StoreCheck(path, kind, n, 0, source=str(attrs.get("source") or ""))
    try:
        done = group[integrity.DONE][:].astype(bool)
    except Exception as exc:  # noqa: BLE001 - a corrupt flag chunk
        raise StoreError(f"{path}: the done flags cannot be read ({type(exc).__name__}); delete "
                         "the store and re-run the stage that writes it") from None
    check.n_done = int(done.sum())
    check.problems += integrity.check_done_flags(group, ids)
    if kind == "feature":
        lost = sorted(set(attrs.get("expected_objects", [])) - set(np.flatnonzero(done).tolist()))
        check.problems += [integrity.Problem(i, ids[i], "done", "expected but not done")
                           for i in lost if all(p.index != i for p in check.problems)]
    for i in np.flatnonzero(done):
        check.problems += integrity.check_object(group, path, int(i), ids[i], content, content)
    if kind == "feature":
        check.store_problems += derived_problems(group, path)
    if attrs.get("complete") and attrs.get("fingerprint") and not check.problems:
        key = attrs[KINDS[kind][0]]
        if integrity.fingerprint_of(group, key) != attrs["fingerprint"]:
            check.store_problems.append("the digests no longer match the store's fingerprint "
                                        "(the digests or done arrays were changed)")
    check.seconds = time.perf_counter() - t0
    return check


def repair_store(check: StoreCheck) -> list[int]:
    """Reset the bad objects of ``check`` (and mark the store incomplete). Returns them."""
    from cache.store_lock import StoreLock

    with StoreLock(check.path, stage="verify --repair"):
        group = open_group(check.path, mode="r+")
        if check.store_problems and not check.problems:  # nothing object-level to redo
            group.attrs.update({"complete": False, "fingerprint": None})
            return []
        return integrity.reset_objects(group, check.bad_indices)
