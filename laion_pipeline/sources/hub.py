"""Hugging Face Hub downloads: resolve a revision to its commit, list the parquet files at that
commit, and fetch each one resumably, verified against the hub's size and sha256 before
anything reads it.

The transfer is huggingface_hub's own (`get_hf_file_metadata`, `http_get`); what this module
adds is a partial file that survives between runs (so an interrupted download resumes), retries
with backoff, verification, and errors that say what to change.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers

from laion_pipeline.common.errors import SourceError
from laion_pipeline.common.files import (
    HASH_CHUNK,
    VerifiedFiles,
    check_free_disk,
    write_json_atomic,
)
from laion_pipeline.common.retrying import TRANSIENT_STATUS, Retries, transient_http

DEFAULT_ENDPOINT = "https://huggingface.co"
# The dataset of the 2022 write-up (taken down in December 2023).
DEFAULT_HF_REPO = "ChristophSchuhmann/improved_aesthetics_6plus"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
T = TypeVar("T")


class HubError(SourceError):
    """The hub or its files cannot give what the build needs; the message says what to do."""


class VerificationError(HubError):
    """A downloaded file does not match the hub's size or hash; it has been deleted."""


@dataclass(frozen=True)
class HubFile:
    """One parquet file of the dataset at a commit, with what the hub says it must be."""

    path: str
    size: int
    sha256: str | None  # the LFS object id: sha256 of the content
    blob_id: str | None  # the git blob id, for files not stored with LFS

    @property
    def version(self) -> str:
        """What changes with the content: its sha256, else its git blob id."""
        return self.sha256 or self.blob_id or f"size:{self.size}"


@dataclass(frozen=True)
class HubListing:
    repo_id: str
    revision: str
    sha: str
    files: tuple[HubFile, ...]


def safe_relative_path(path: str) -> PurePosixPath:
    """A repo file path that stays inside the folder it is written to, or an error."""
    pure = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or "\0" in path
        or pure.is_absolute()
        or any(part in ("..", ".", "") for part in path.split("/"))
    ):
        raise HubError(f"the hub listed a file with an unsafe path {path!r}; refusing to write it")
    return pure


def is_transient(error: BaseException) -> bool:
    """Worth retrying: network trouble, timeouts, 5xx, 408 and 429, a body cut short."""
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        return status is None or status in TRANSIENT_STATUS or status >= 500
    if transient_http(error):
        return True
    # huggingface_hub reports a body cut short as a bare OSError; file system errors carry errno.
    return type(error) is OSError and error.errno is None


def append_download(
    url: str, partial: Path, headers: dict[str, str], expected_size: int, tqdm_class: type
) -> None:
    """Fetch the rest of ``url`` onto the end of ``partial`` (a Range request from its size).

    The one call of huggingface_hub's `http_get`, which is not part of its documented API:
    it is the transfer `hf_hub_download` itself uses (its HTTP client, redirects, retries
    within the call, and a check of the size received). `hf_hub_download` would delete the
    partial file of a failed download, so nothing would resume across runs. A contract test
    (test_huggingface.py) pins what this relies on: resuming from the file's size, appending,
    and failing when fewer bytes arrive than expected."""
    with partial.open("ab") as out:
        http_get(
            url,
            out,
            resume_size=out.tell(),
            headers=headers,
            expected_size=expected_size,
            tqdm_class=tqdm_class,
        )


def git_blob_id(path: Path) -> str:
    """The git object id of a file's content: sha1 of ``blob <size>\\0<content>``."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(file: HubFile, path: Path, verified: VerifiedFiles) -> str | None:
    """Why ``path`` is not ``file``, or None when size and hash match."""
    size = path.stat().st_size
    if size != file.size:
        return f"size {size:,} bytes, the hub says {file.size:,}"
    if file.sha256:
        actual = verified.sha256(path)
        return None if actual == file.sha256 else f"sha256 {actual}, the hub says {file.sha256}"
    if file.blob_id:
        actual = git_blob_id(path)
        return None if actual == file.blob_id else f"git blob {actual}, the hub says {file.blob_id}"
    return None


class TransferProgress:
    """Bytes received per file, logged every few seconds with the rate."""

    def __init__(self, log: Any, every: float = 5.0) -> None:
        self.log, self.every = log, every
        self.lock = threading.Lock()
        self.done: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.started = time.monotonic()
        self.last = 0.0
        self.resumed = 0

    def start(self, name: str, size: int, already: int) -> None:
        with self.lock:
            self.sizes[name], self.done[name] = size, already
            self.resumed += already

    def summary(self) -> str:
        fetched = sum(self.done.values()) - self.resumed
        seconds = time.monotonic() - self.started
        return (
            f"{len(self.sizes)} files verified; downloaded {fetched / 1e6:,.1f} MB in "
            f"{seconds:,.1f} s ({fetched / max(seconds, 1e-9) / 1e6:,.1f} MB/s)"
        )

    def add(self, name: str, count: int) -> None:
        with self.lock:
            self.done[name] = self.done.get(name, 0) + count
            now = time.monotonic()
            if self.log is None or now - self.last < self.every:
                return
            self.last = now
            fetched = sum(self.done.values()) - self.resumed
            rate = fetched / max(now - self.started, 1e-9) / 1e6
            parts = ", ".join(
                f"{n} {self.done[n] / 1e6:,.1f}/{self.sizes[n] / 1e6:,.1f} MB"
                for n in self.sizes
                if self.done[n] < self.sizes[n]
            )
            self.log.info(f"downloading at {rate:,.1f} MB/s: {parts}")


def _progress_bar(progress: TransferProgress, name: str) -> type:
    """A tqdm-compatible class that forwards huggingface_hub's byte counts to ``progress``."""

    class Bar:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, count: int) -> None:
            progress.add(name, count)

        def close(self) -> None:
            return None

    return Bar


class HubClient:
    """The dataset repo ``repo_id`` at ``revision`` on ``endpoint``.

    ``token`` None means huggingface_hub's own (``HF_TOKEN`` or the saved login). It is sent
    to the hub only, never to the storage a download redirects to, and never logged.
    """

    def __init__(
        self,
        repo_id: str,
        revision: str = "main",
        *,
        endpoint: str | None = None,
        token: str | None = None,
        attempts: int = 5,
        backoff_seconds: float = 2.0,
        log: Any = None,
    ) -> None:
        if not REPO_ID.match(repo_id) or ".." in repo_id:
            raise HubError(f"LAION_HF_REPO={repo_id!r} is not a repo id: use the form owner/name")
        self.repo_id, self.revision = repo_id, revision
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.token, self.attempts, self.backoff, self.log = token, attempts, backoff_seconds, log

    def _retrying(self, what: str, action: Callable[[], T]) -> T:
        return Retries(self.attempts, self.backoff).call(
            action, transient=is_transient, what=what, log=self.log
        )

    def _unreachable(self, error: Exception) -> HubError:
        return HubError(
            f"cannot reach the Hugging Face Hub at {self.endpoint} ({type(error).__name__}: "
            f"{error}): check the network or HF_ENDPOINT; LAION_SOURCE=sample and "
            "LAION_SOURCE=local work offline",
            transient=True,
        )

    def gated(self, error: HfHubHTTPError) -> HubError:
        """A 401/403 on a file: the repo is gated and this account has not accepted its terms
        (or HF_TOKEN is not set)."""
        status = error.response.status_code if error.response is not None else "401/403"
        return HubError(
            f"{self.repo_id} is gated ({self.endpoint} answered {status} for its files): open "
            f"{self.endpoint}/datasets/{self.repo_id} logged in and accept its terms, then set "
            "HF_TOKEN to a token of that account and run again"
        )

    def file_metadata(self, sha: str, path: str) -> tuple[int, str | None, str]:
        """The size, ETag and location the hub gives for ``path`` at commit ``sha`` (a HEAD
        request: nothing is downloaded). A gated repo without access fails saying what to do."""
        url = hf_hub_url(
            self.repo_id, path, repo_type="dataset", revision=sha, endpoint=self.endpoint
        )
        try:
            metadata = self._retrying(
                f"asking for {path}",
                lambda: get_hf_file_metadata(url, token=self.token, endpoint=self.endpoint),
            )
        except GatedRepoError as error:
            raise self.gated(error) from error
        except EntryNotFoundError as error:
            raise HubError(
                f"{path} is listed in {self.repo_id} at {sha} but the hub has no such "
                "file: the mirror is incomplete; set LAION_HF_REPO to a complete copy"
            ) from error
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status in (401, 403):
                raise self.gated(error) from error
            raise
        if metadata.size is None:
            raise HubError(
                f"{self.endpoint} gives no size for {path} (no listing size, no Content-Length): "
                "use a hub or mirror that does, or download the files and use LAION_SOURCE=local"
            )
        return metadata.size, metadata.etag, metadata.location

    def listing(
        self,
        wants: Callable[[str], bool] = lambda path: path.endswith(".parquet"),
        pattern: str = "*.parquet",
    ) -> HubListing:
        """Resolve the revision to a commit and list the files ``wants`` there, in path order.
        Sizes and hashes the listing does not give come from each file's headers; the first
        file is asked for in any case, so a gated repo fails here, before any download."""
        api = HfApi(endpoint=self.endpoint, token=self.token)
        try:
            info = self._retrying(
                f"listing {self.repo_id}@{self.revision}",
                lambda: api.dataset_info(self.repo_id, revision=self.revision, files_metadata=True),
            )
        except GatedRepoError as error:
            raise HubError(
                f"{self.repo_id} is gated on {self.endpoint}: accept its terms on the hub and set "
                "HF_TOKEN to a token of that account"
            ) from error
        except RepositoryNotFoundError as error:
            raise HubError(
                f"dataset repo {self.repo_id} not found on {self.endpoint} (or it is private and "
                "HF_TOKEN is not set): set LAION_HF_REPO to a mirror of the dataset (the original "
                "was taken down in December 2023), or use LAION_SOURCE=local"
            ) from error
        except RevisionNotFoundError as error:
            raise HubError(
                f"revision {self.revision!r} not found in {self.repo_id}: set LAION_HF_REVISION to "
                "a branch, tag or commit of that repo"
            ) from error
        except HfHubHTTPError as error:
            raise HubError(
                f"{self.endpoint} answered {error} when listing {self.repo_id}@{self.revision}"
                + (
                    f" after {self.attempts} attempts: try again later"
                    if is_transient(error)
                    else ": check HF_TOKEN and LAION_HF_REPO"
                ),
                transient=is_transient(error),
            ) from error
        except Exception as error:
            if is_transient(error):
                raise self._unreachable(error) from error
            raise
        files = []
        for sibling in sorted(info.siblings or [], key=lambda s: s.rfilename):
            if not wants(sibling.rfilename):
                continue
            safe_relative_path(sibling.rfilename)
            lfs = sibling.lfs
            size = lfs.size if lfs else sibling.size
            sha256 = lfs.sha256 if lfs else None
            blob_id = None if lfs else sibling.blob_id
            if not files or size is None or not (sha256 or blob_id):
                head_size, etag, _ = self.file_metadata(info.sha, sibling.rfilename)
                size = size if size is not None else head_size
                # The hub's ETag is the sha256 of an LFS file, the git blob id of another one.
                tag = (etag or "").strip('"').removeprefix("W/").strip('"').lower()
                if not (sha256 or blob_id) and re.fullmatch(r"[0-9a-f]{64}", tag):
                    sha256 = tag
                elif not (sha256 or blob_id) and re.fullmatch(r"[0-9a-f]{40}", tag):
                    blob_id = tag
            files.append(HubFile(sibling.rfilename, size, sha256, blob_id))
        if not files:
            raise HubError(
                f"{self.repo_id} at {self.revision} ({info.sha}) has no .parquet files matching "
                f"{pattern}: set LAION_HF_REPO to a copy of the dataset, or LAION_PROFILE to "
                "the profile of this repo"
            )
        return HubListing(self.repo_id, self.revision, info.sha, tuple(files))

    def download(
        self,
        sha: str,
        file: HubFile,
        folder: Path,
        progress: TransferProgress,
        verified: VerifiedFiles,
        offline: bool = False,
    ) -> Path:
        """Fetch ``file`` of commit ``sha`` into ``folder`` (keeping its repo path) unless a
        verified copy is there. A partial ``.part`` file is resumed, on retry and on the next run.
        """
        target = folder / safe_relative_path(file.path)
        if target.is_file() and _mismatch(file, target, verified) is None:
            progress.start(file.path, file.size, file.size)
            return target
        if offline:
            raise HubError(
                f"HF_HUB_OFFLINE is set and {target} is missing or incomplete: unset "
                "HF_HUB_OFFLINE for one run to download it"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        # Named by content, so a partial file of another revision is never resumed into this one.
        content_id = (file.sha256 or file.blob_id or "unknown")[:16]
        partial = target.with_name(f"{target.name}.{content_id}.part")
        already = partial.stat().st_size if partial.exists() else 0
        progress.start(file.path, file.size, already)

        def fetch() -> None:
            _, _, location = self.file_metadata(sha, file.path)
            same_origin = urlsplit(location)[:2] == urlsplit(self.endpoint)[:2]
            headers = build_hf_headers(token=self.token) if same_origin else {}
            if partial.exists() and partial.stat().st_size > file.size:
                partial.unlink()
            try:
                append_download(
                    location, partial, headers, file.size, _progress_bar(progress, file.path)
                )
            except HfHubHTTPError as error:
                status = error.response.status_code if error.response is not None else None
                if status in (401, 403):
                    raise self.gated(error) from error
                raise

        for verification in (1, 2):
            try:
                self._retrying(f"downloading {file.path}", fetch)
            except HubError:
                raise
            except Exception as error:
                if not is_transient(error):
                    raise
                raise HubError(
                    f"downloading {file.path} failed {self.attempts} times ({error}): check the "
                    "network and try again; the part already fetched is kept and resumed",
                    transient=True,
                ) from error
            problem = _mismatch(file, partial, verified)
            if problem is None:
                os.replace(partial, target)
                verified.moved(partial, target)
                return target
            partial.unlink()
            if self.log:
                self.log.warning(f"{file.path} failed verification ({problem}); deleted it")
            if verification == 2:
                raise VerificationError(
                    f"{file.path} from {self.repo_id} at {sha} failed verification twice "
                    f"({problem}); the file was deleted. The hub or mirror serves a corrupt file: "
                    "try again later or set LAION_HF_REPO to another mirror"
                )
        raise AssertionError("unreachable")

    def download_all(
        self, listing: HubListing, folder: Path, workers: int = 4, offline: bool = False
    ) -> list[Path]:
        """Download every file of ``listing`` concurrently; return their paths in file order.
        ``offline`` only checks the files already there."""
        if not offline:
            missing = [f for f in listing.files if not (folder / f.path).is_file()]
            check_free_disk(
                folder, sum(f.size for f in missing), f"downloading {len(missing)} files"
            )
        progress = TransferProgress(self.log)
        verified = VerifiedFiles(folder / VerifiedFiles.NAME, self.log)
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [
                    pool.submit(
                        self.download, listing.sha, file, folder, progress, verified, offline
                    )
                    for file in listing.files
                ]
                paths = [future.result() for future in futures]
        finally:
            verified.save()
        if self.log:
            self.log.info(progress.summary())
        return paths


def save_listing(path: Path, listing: HubListing) -> None:
    """Remember a resolved listing, so HF_HUB_OFFLINE runs can use the files already fetched."""
    write_json_atomic(path, asdict(listing))


def load_listing(path: Path) -> HubListing | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    files: Sequence[dict] = data.pop("files")
    return HubListing(**data, files=tuple(HubFile(**f) for f in files))
