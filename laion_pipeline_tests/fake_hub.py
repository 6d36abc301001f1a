"""A Hugging Face Hub on 127.0.0.1: the endpoints huggingface_hub calls to list a dataset and
download its files (revision and tree listings, `resolve` with its `X-Repo-Commit`, `ETag` and
`Content-Length` headers), served by pytest-httpserver, with faults to inject.

Files can live on a second origin ("storage"), as the real hub redirects downloads to its CDN.
"""

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import unquote

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response


@dataclass
class Seen:
    origin: str
    method: str
    path: str
    headers: dict[str, str]
    file: str | None = None  # the repo file a download served


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(f"blob {len(content)}\0".encode() + content).hexdigest()


@dataclass
class FakeHub:
    server: HTTPServer
    storage: HTTPServer | None = None
    branches: dict[str, dict[str, str]] = field(default_factory=dict)  # repo -> ref -> sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> path -> bytes
    # Per file path, what the next downloads of it do: "500", "cut" (half the body, then the
    # connection drops) or "corrupt" (right length, wrong bytes).
    faults: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    api_faults: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    use_lfs: bool = True
    # False: the listing gives file names only (no sizes, no hashes), as some mirrors do.
    listing_details: bool = True
    # Gated repos and the one token that has accepted their terms: files answer 401 without a
    # token and 403 with another one (the listing still answers, as the real hub's does).
    gated: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        api, resolve = re.compile(r"^/api/datasets/.+"), re.compile(r"^/datasets/.+")
        self.server.expect_request(api).respond_with_handler(self._api)
        self.server.expect_request(resolve).respond_with_handler(self._resolve)
        if self.storage is not None:
            blobs = re.compile(r"^/blobs/.+")
            self.storage.expect_request(blobs).respond_with_handler(self._blob)

    @property
    def endpoint(self) -> str:
        return self.server.url_for("").rstrip("/")

    def commit(self, repo: str, files: dict[str, bytes], ref: str = "main") -> str:
        """Add a commit holding ``files`` and point ``ref`` at it; returns its sha."""
        sha = hashlib.sha1(repr(sorted((p, c) for p, c in files.items())).encode()).hexdigest()
        self.commits[sha] = dict(files)
        self.branches.setdefault(repo, {})[ref] = sha
        return sha

    def downloads(self, file: str) -> list[Seen]:
        """The GET requests that served repo file ``file`` (from the hub or the storage)."""
        return [s for s in self.seen if s.method == "GET" and s.file == file]

    def _log(self, origin: str, request: Request) -> Seen:
        seen = Seen(origin, request.method, request.path, dict(request.headers))
        self.seen.append(seen)
        return seen

    def _sha(self, repo: str, ref: str) -> str | None:
        if ref in self.commits and repo in self.branches:
            return ref
        return self.branches.get(repo, {}).get(ref)

    @staticmethod
    def _error(code: str, status: int = 404) -> Response:
        return Response(f'{{"error": "{code}"}}', status=status, headers={"X-Error-Code": code})

    def _api(self, request: Request) -> Response:
        self._log("hub", request)
        if self.api_faults:
            return Response("hub hiccup", status=int(self.api_faults.pop(0)))
        match = re.match(r"^/api/datasets/([^/]+/[^/]+)/revision/(.+)$", request.path)
        if not match:
            return self._error("RepoNotFound")
        repo, ref = match.group(1), unquote(match.group(2))
        if repo not in self.branches:
            return self._error("RepoNotFound", 401)
        sha = self._sha(repo, ref)
        if sha is None:
            return self._error("RevisionNotFound")
        siblings = []
        for path, content in sorted(self.commits[sha].items()):
            if not self.listing_details:
                siblings.append({"rfilename": path})
                continue
            sibling = {"rfilename": path, "size": len(content), "blobId": git_blob_id(content)}
            if self.use_lfs:
                digest = hashlib.sha256(content).hexdigest()
                sibling["lfs"] = {"sha256": digest, "size": len(content), "pointerSize": 134}
            siblings.append(sibling)
        body = {"id": repo, "sha": sha, "private": False, "siblings": siblings}
        return Response(json.dumps(body), headers={"Content-Type": "application/json"})

    def _resolve(self, request: Request) -> Response:
        seen = self._log("hub", request)
        match = re.match(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", request.path)
        if not match or match.group(1) not in self.branches:
            return self._error("RepoNotFound", 401)
        repo, ref, path = match.group(1), unquote(match.group(2)), unquote(match.group(3))
        if repo in self.gated:
            offered = request.headers.get("Authorization", "")
            if offered != f"Bearer {self.gated[repo]}":
                status = 403 if offered else 401
                return Response(
                    "Access to this dataset is restricted",
                    status=status,
                    headers={"X-Error-Code": "GatedRepo", "X-Error-Message": "restricted"},
                )
        sha = self._sha(repo, ref)
        if sha is None:
            return self._error("RevisionNotFound")
        content = self.commits[sha].get(path)
        if content is None:
            return self._error("EntryNotFound")
        digest = hashlib.sha256(content).hexdigest()
        etag = digest if self.use_lfs else git_blob_id(content)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if self.storage is not None:
            headers |= {
                "Location": self.storage.url_for(f"/blobs/{digest}?name={path}"),
                "X-Linked-Etag": f'"{etag}"',
                "X-Linked-Size": str(len(content)),
            }
            return Response("", status=302, headers=headers)
        if request.method == "HEAD":
            return Response("", headers=headers | {"Content-Length": str(len(content))})
        return self._body(request, seen, path, content, headers)

    def _blob(self, request: Request) -> Response:
        seen = self._log("storage", request)
        digest = request.path.rsplit("/", 1)[-1]
        for files in self.commits.values():
            for path, content in files.items():
                if hashlib.sha256(content).hexdigest() == digest:
                    return self._body(request, seen, path, content, {"Accept-Ranges": "bytes"})
        return Response("no such blob", status=404)

    def _body(
        self, request: Request, seen: Seen, path: str, content: bytes, headers: dict
    ) -> Response:
        seen.file = path
        fault = self.faults[path].pop(0) if self.faults[path] else None
        if fault == "500":
            return Response("storage hiccup", status=500)
        start = 0
        status = 200
        range_header = request.headers.get("Range")
        if range_header:
            start = int(re.match(r"bytes=(\d+)-", range_header).group(1))
            status = 206
            headers = headers | {
                "Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}"
            }
        body = content[start:]
        if fault == "corrupt":
            body = bytes(b ^ 0xFF for b in body)
        headers = headers | {"Content-Length": str(len(body))}
        if fault == "cut":
            half = body[: len(body) // 2]

            def dropped():
                yield half
                raise ConnectionAbortedError("fault injected: connection dropped mid-body")

            return Response(dropped(), status=status, headers=headers)
        return Response(body, status=status, headers=headers)


def start_server() -> HTTPServer:
    """An HTTP server on 127.0.0.1, on a free port."""
    server = HTTPServer("127.0.0.1", 0, threaded=True)
    server.start()
    return server
