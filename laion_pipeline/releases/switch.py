"""Releases: everything one publish serves (the database, Datasette's files, the manifest and
the analysis report), in a folder of its own, ``published/releases/<id>/``, made current by
one atomic rename.

``published/current`` and ``published/previous`` are symbolic links to release folders. A
switch writes both new links under hidden names, renames the new ``current`` into place (the
switch itself: one atomic step), then the new ``previous``. A kill before that first rename
leaves the old release current; a kill after it leaves the new one current, and the next
holder of the data folder's lock finishes the switch (``recover``), which also removes the
releases no pointer names. A reader resolves ``current`` once and reads that one folder, so it
never mixes two releases. Only the holder of the data folder's lock switches.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from laion_pipeline.common.errors import StaleInputError
from laion_pipeline.common.files import write_json_atomic
from laion_pipeline.common.layout import DEFAULT_DATABASE, POINTERS, DataLayout, ReleaseFiles

# Tests set this variable to a step's name to SIGKILL the process at that step.
FAULT_VARIABLE = "LAION_TEST_KILL_AT"


def fault(step: str) -> None:
    """Die here, as a crash or a SIGKILL would, when a test asks for it."""
    if os.environ.get(FAULT_VARIABLE) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def pointed_release(layout: DataLayout, pointer: str) -> str | None:
    """The id of the release ``published/<pointer>`` names, or None."""
    try:
        return Path(os.readlink(layout.pointer(pointer))).name
    except OSError:  # no link there (or not a link)
        return None


def current_release(layout: DataLayout) -> ReleaseFiles:
    """The current release's own folder, resolved once: read everything of one release from
    it, even if a publish switches ``current`` meanwhile."""
    release_id = pointed_release(layout, "current")
    if release_id is None:
        raise StaleInputError(
            f"nothing is published in {layout.published_dir}: materialize published_database "
            "(`make run`)"
        )
    return layout.release(release_id)


def new_release(
    layout: DataLayout, sha256: str, database: str, now: dt.datetime | None = None
) -> tuple[str, ReleaseFiles]:
    """A new, empty release folder for the database named ``database``, named by the time
    (``now``) and the database's sha256."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    base = release_id = f"{stamp}-{sha256[:12]}"
    n = 1
    while layout.release(release_id).folder.exists():
        n += 1
        release_id = f"{base}-{n}"
    release = layout.release(release_id, database)
    release.folder.mkdir(parents=True)
    return release_id, release


def _candidate_pointer(layout: DataLayout, pointer: str) -> Path:
    return layout.published_dir / f".{pointer}.new"


def switch(layout: DataLayout, current: str, previous: str | None) -> None:
    """Serve release ``current`` and keep ``previous`` for rollback (see the module's
    docstring for why a kill at any instant leaves ``current`` whole)."""
    links = {"current": current, "previous": previous}
    candidates = {}
    for pointer in POINTERS:  # current first: while its link waits, nothing has switched
        if links[pointer] is not None:
            candidates[pointer] = _candidate_pointer(layout, pointer)
            candidates[pointer].unlink(missing_ok=True)
            os.symlink(Path("releases") / links[pointer], candidates[pointer])
    fault("switch-links-written")
    os.replace(candidates["current"], layout.pointer("current"))
    fault("switch-current-renamed")
    if "previous" in candidates:
        os.replace(candidates["previous"], layout.pointer("previous"))
    fault("switch-previous-renamed")
    remove_unused_releases(layout)


def recover(layout: DataLayout) -> list[Path]:
    """Finish or undo a switch a killed process left halfway, and remove releases that no
    pointer names (a publish killed before its switch, old releases). Returns what it removed
    or renamed."""
    touched = []
    candidate_current = _candidate_pointer(layout, "current")
    candidate_previous = _candidate_pointer(layout, "previous")
    if candidate_current.is_symlink():  # the switch never happened: undo it
        candidate_current.unlink()
        touched.append(candidate_current)
        if candidate_previous.is_symlink():
            candidate_previous.unlink()
            touched.append(candidate_previous)
    elif candidate_previous.is_symlink():  # current switched: finish the switch
        os.replace(candidate_previous, layout.pointer("previous"))
        touched.append(candidate_previous)
    return touched + adopt_flat_layout(layout) + remove_unused_releases(layout)


# What a data folder published before releases held in published/ (and in published/previous/).
FLAT_FILES = (f"{DEFAULT_DATABASE}.db", "metadata.json", "inspect.json", "manifest.json", "report")


def adopt_flat_layout(layout: DataLayout) -> list[Path]:
    """Turn a data folder published before releases (the files flat in `published/`, the
    version before them in `published/previous/`) into two releases, current and previous, so
    an upgrade loses nothing served. Returns the folders it adopted."""
    flat = layout.published_dir / FLAT_FILES[0]
    old_previous = layout.pointer("previous")
    if not flat.is_file() and not (old_previous.is_dir() and not old_previous.is_symlink()):
        return []
    adopted = []
    previous = None
    if old_previous.is_dir() and not old_previous.is_symlink():
        previous = _adopt(layout, old_previous)
        adopted.append(old_previous)
    current = pointed_release(layout, "current")
    if flat.is_file():
        gathered = layout.published_dir / ".flat"
        gathered.mkdir(exist_ok=True)
        for name in FLAT_FILES:
            if (layout.published_dir / name).exists():
                os.replace(layout.published_dir / name, gathered / name)
        current = _adopt(layout, gathered)
        adopted.append(flat)
    if current is None:  # only an old previous version: serve it rather than lose it
        current, previous = previous, None
    if current is not None:
        switch(layout, current, previous or pointed_release(layout, "previous"))
    return adopted


def _adopt(layout: DataLayout, folder: Path) -> str:
    """Move ``folder`` (a flat release: the database and its files) into `releases/`."""
    files = ReleaseFiles(folder)
    manifest = json.loads(files.manifest_json.read_text(encoding="utf-8"))
    built = dt.datetime.fromisoformat(manifest["built_at"])
    release_id, release = new_release(layout, manifest["sha256"], DEFAULT_DATABASE, built)
    manifest["release"] = release_id
    write_json_atomic(files.manifest_json, manifest)
    release.folder.rmdir()
    os.replace(folder, release.folder)
    return release_id


def remove_unused_releases(layout: DataLayout) -> list[Path]:
    """Delete every release folder that neither ``current`` nor ``previous`` names."""
    if not layout.releases_dir.is_dir():
        return []
    kept = {pointed_release(layout, pointer) for pointer in POINTERS}
    unused = [p for p in sorted(layout.releases_dir.iterdir()) if p.name not in kept]
    for path in unused:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return unused


def held_release(layout: DataLayout) -> dict[str, Any]:
    """What `rollback` recorded (``published/held.json``): the release it serves again and
    the inputs of the release it replaced; empty when nothing is held."""
    try:
        held = json.loads(layout.held_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}


def hold(layout: DataLayout, served: str, replaced: str | None) -> None:
    """Remember that ``served`` was chosen by a rollback from ``replaced``: the next run leaves
    it current until an input differs from ``replaced``'s."""
    inputs = layout.release(replaced).manifest.get("inputs_digest") if replaced else None
    write_json_atomic(layout.held_json, {"release": served, "rolled_back_inputs": inputs})


def rollback(layout: DataLayout) -> str:
    """Serve the previous release again and keep the current one as the previous: running it
    twice returns to where you were. The caller holds the data folder's lock. Returns the id
    of the release now served."""
    current = pointed_release(layout, "current")
    previous = pointed_release(layout, "previous")
    if previous is None or not layout.release(previous).folder.is_dir() or previous == current:
        raise StaleInputError(
            f"there is no previous release in {layout.published_dir}: one is kept from the "
            "second publish on"
        )
    undoing = held_release(layout).get("release") == current  # the rollback before, undone
    switch(layout, previous, current)
    if undoing:
        layout.held_json.unlink(missing_ok=True)
    else:
        hold(layout, previous, current)
    return previous
