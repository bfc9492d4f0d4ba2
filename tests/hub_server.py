"""A small Hugging Face Hub-compatible HTTP server for offline tests (standard library only).

It answers the calls the real ``huggingface_hub`` client makes to create a repo, upload a folder in one commit
(every file "regular": inline base64 in the ndjson commit, so no LFS or Xet), read repo info, list files and
download them by ID — enough for ``HfApi.upload_folder``, ``HfApi.repo_exists``/``file_exists``,
``hf_hub_download``, ``snapshot_download``, ``ModelCard.load`` and ``from_pretrained`` with
``HF_ENDPOINT=http://127.0.0.1:PORT``. It listens on 127.0.0.1 on a free port and keeps everything in memory.

Example:
    >>> with HubServer() as hub:
    ...     hub.url.startswith("http://127.0.0.1:")
    True
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["HubServer", "Repo"]

_ZERO_SHA = "0" * 40


@dataclass
class Repo:
    """One repository: its files at the head of ``main`` and the commit history (oldest first)."""

    repo_id: str
    repo_type: str
    private: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"] if self.commits else _ZERO_SHA

    def snapshot(self, revision: str) -> dict[str, bytes] | None:
        """The files at ``revision`` (``main`` or a commit sha), None when the revision is unknown."""
        if revision in ("main", "refs/heads/main") or revision == self.sha:
            return self.files
        for commit in self.commits:
            if commit["oid"] == revision:
                return commit["files"]
        return None


def _git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubServer:
    """An in-memory Hub on ``127.0.0.1`` (random free port), served from a background thread.

    Args:
        tokens: Accepted tokens. ``None`` accepts any request; otherwise a write, or a ``whoami``, with another (or
            no) token gets a 401.
        user: The user name ``whoami-v2`` reports and repos without a namespace go to.

    Attributes:
        repos: ``(repo_type, repo_id) -> Repo``.
        requests: ``(method, path)`` of every request, in order.
        tokens_seen: Every bearer token received (to check a token was really sent).

    Example:
        >>> with HubServer() as hub:
        ...     hub.add_repo("me/demo", {"README.md": b"hi"}).sha != "0" * 40
        True
    """

    def __init__(self, tokens: set[str] | None = None, user: str = "tester") -> None:
        self.tokens = tokens
        self.user = user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.tokens_seen: set[str] = set()
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint to give the client, e.g. as ``HF_ENDPOINT``."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ state
    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None, repo_type: str = "model") -> Repo:
        """Create ``repo_id`` (if needed) and commit ``files`` to it directly (to seed a test)."""
        with self.lock:
            repo = self.repos.setdefault((repo_type, repo_id), Repo(repo_id, repo_type))
            if files:
                self._commit(repo, "seed", dict(files), [])
            return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def _commit(self, repo: Repo, summary: str, added: dict[str, bytes], deleted: list[str]) -> str:
        files = dict(repo.files)
        files.update(added)
        for path in deleted:
            for name in [p for p in files if p == path or p.startswith(path.rstrip("/") + "/")]:
                del files[name]
        digest = hashlib.sha1(f"{repo.sha}{summary}{time.time_ns()}{sorted(files)}".encode()).hexdigest()
        repo.files = files
        repo.commits.append({"oid": digest, "summary": summary, "files": dict(files), "date": time.time()})
        return digest


_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_ID = r"(?P<id>[^/]+(?:/[^/]+)?)"


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read captured output
            pass

        # -------------------------------------------------------------- plumbing
        def _token(self) -> str | None:
            header = self.headers.get("Authorization", "")
            if header.lower().startswith("bearer "):
                token = header[7:].strip()
                hub.tokens_seen.add(token)
                return token
            return None

        def _authorized(self) -> bool:
            token = self._token()
            return hub.tokens is None or token in hub.tokens

        def _body(self) -> bytes:
            return self._payload

        def _read_body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                return self.rfile.read(length)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            return b""

        def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
            body = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str | None, message: str) -> None:
            headers = {"X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, {"error": message}, headers)

        def _route(self) -> None:
            # Read the whole body first, whatever the route: an unread body would corrupt the next request on
            # this keep-alive connection.
            self._payload = self._read_body()
            path = urlsplit(self.path).path
            with hub.lock:
                hub.requests.append((self.command, path))
            try:
                for pattern, methods, handler in self._routes():
                    match = re.fullmatch(pattern, unquote(path))
                    if match and self.command in methods:
                        handler(**match.groupdict())
                        return
                self._error(404, None, f"no route for {self.command} {path}")
            except Exception as err:  # a bug in the test server must show up as a 500, not a hang
                self._error(500, None, f"{type(err).__name__}: {err}")

        def _routes(self) -> list[tuple[str, tuple[str, ...], Any]]:
            kinds = "(?P<kind>models|datasets|spaces)"
            return [
                (r"/api/whoami-v2", ("GET",), self.whoami),
                (r"/api/repos/create", ("POST",), self.create_repo),
                (r"/api/validate-yaml", ("POST",), self.validate_yaml),
                (rf"/api/{kinds}/{_ID}/preupload/(?P<rev>[^/]+)", ("POST",), self.preupload),
                (rf"/api/{kinds}/{_ID}/commit/(?P<rev>[^/]+)", ("POST",), self.commit),
                (rf"/api/{kinds}/{_ID}/refs", ("GET",), self.refs),
                (rf"/api/{kinds}/{_ID}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", ("GET",), self.tree),
                (rf"/api/{kinds}/{_ID}/revision/(?P<rev>[^/]+)", ("GET",), self.info),
                (rf"/api/{kinds}/{_ID}", ("GET",), self.info),
                (
                    r"/(?P<kind>datasets|spaces)/" + _ID + r"/resolve/(?P<rev>[^/]+)/(?P<file>.+)",
                    ("GET", "HEAD"),
                    self.resolve,
                ),
                ("/" + _ID + r"/resolve/(?P<rev>[^/]+)/(?P<file>.+)", ("GET", "HEAD"), self.resolve),
            ]

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _route

        def _repo(self, kind: str, repo_id: str) -> Repo | None:
            repo = hub.repo(repo_id.lstrip("/"), _REPO_TYPES.get(kind, "model"))
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
            return repo

        def _snapshot(self, repo: Repo, rev: str) -> dict[str, bytes] | None:
            files = repo.snapshot(unquote(rev))
            if files is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return files

        # -------------------------------------------------------------- endpoints
        def whoami(self) -> None:
            if self._token() is None or not self._authorized():
                self._error(401, None, "Invalid credentials in Authorization header")
                return
            self._send(200, {"type": "user", "name": hub.user, "orgs": [], "auth": {"type": "access_token"}})

        def create_repo(self) -> None:
            if not self._authorized():
                self._error(401, None, "Invalid credentials in Authorization header")
                return
            data = json.loads(self._body() or b"{}")
            repo_id = f"{data.get('organization') or hub.user}/{data['name']}"
            repo_type = data.get("type") or "model"
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            url = f"{hub.url}/{prefix}{repo_id}"
            with hub.lock:
                if (repo_type, repo_id) in hub.repos:
                    self._send(409, {"error": "You already created this model repo", "url": url})
                    return
                hub.repos[(repo_type, repo_id)] = Repo(
                    repo_id, repo_type, private=data.get("visibility") == "private" or bool(data.get("private"))
                )
            self._send(200, {"url": url, "name": repo_id, "id": repo_id})

        def validate_yaml(self) -> None:
            content = json.loads(self._body() or b"{}").get("content", "")
            # The one rule checked here (the real Hub checks many): every model-index entry needs a name.
            front = content.split("---", 2)[1] if content.startswith("---") and content.count("---") >= 2 else ""
            if "model-index:" in front and not re.search(r"model-index:\s*\n- name:", front):
                body = b'"model-index[0].name" is required'
                self.send_response(400)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self._send(200, {"errors": [], "warnings": []})

        def preupload(self, kind: str, id: str, rev: str) -> None:
            data = json.loads(self._body() or b"{}")
            if not self._authorized():
                self._error(401, None, "Invalid credentials in Authorization header")
                return
            if self._repo(kind, id) is None:
                return
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in data["files"]]
            self._send(200, {"files": files, "commitOid": None})

        def commit(self, kind: str, id: str, rev: str) -> None:
            body = self._body()
            if not self._authorized():
                self._error(401, None, "Invalid credentials in Authorization header")
                return
            repo = self._repo(kind, id)
            if repo is None:
                return
            summary, added, deleted = "", {}, []
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    summary = value.get("summary", "")
                elif key == "file":
                    added[value["path"]] = base64.b64decode(value["content"])
                elif key in ("deletedFile", "deletedFolder"):
                    deleted.append(value["path"])
                else:
                    self._error(400, None, f"this test server stores files inline only, got a {key!r} operation")
                    return
            with hub.lock:
                oid = hub._commit(repo, summary, added, deleted)
            prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
            self._send(200, {"success": True, "commitOid": oid, "commitUrl": f"{hub.url}/{prefix}{id}/commit/{oid}"})

        def refs(self, kind: str, id: str) -> None:
            repo = self._repo(kind, id)
            if repo is not None:
                branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": repo.sha}
                self._send(200, {"branches": [branch], "converts": [], "tags": [], "pullRequests": []})

        def tree(self, kind: str, id: str, rev: str, sub: str | None = None) -> None:
            repo = self._repo(kind, id)
            files = None if repo is None else self._snapshot(repo, rev)
            if files is None:
                return
            recursive = parse_qs(urlsplit(self.path).query).get("recursive", ["false"])[0].lower() == "true"
            prefix = (sub or "").strip("/")
            entries: dict[str, dict[str, Any]] = {}
            for path, content in sorted(files.items()):
                if prefix and not path.startswith(prefix + "/"):
                    continue
                rest = path[len(prefix) + 1 :] if prefix else path
                if "/" in rest and not recursive:
                    folder = f"{prefix}/{rest.split('/')[0]}" if prefix else rest.split("/")[0]
                    entries[folder] = {"type": "directory", "oid": _ZERO_SHA, "size": 0, "path": folder}
                    continue
                entries[path] = {"type": "file", "oid": _git_blob_sha(content), "size": len(content), "path": path}
                if recursive:
                    parts = rest.split("/")[:-1]
                    for depth in range(1, len(parts) + 1):
                        folder = "/".join(filter(None, [prefix, *parts[:depth]]))
                        entries[folder] = {"type": "directory", "oid": _ZERO_SHA, "size": 0, "path": folder}
            self._send(200, sorted(entries.values(), key=lambda e: e["path"]))

        def info(self, kind: str, id: str, rev: str = "main") -> None:
            repo = self._repo(kind, id)
            files = None if repo is None else self._snapshot(repo, rev)
            if repo is None or files is None:
                return
            sha = repo.sha if unquote(rev) in ("main", "refs/heads/main") else unquote(rev)
            siblings = [{"rfilename": p, "size": len(c), "blobId": _git_blob_sha(c)} for p, c in sorted(files.items())]
            self._send(
                200,
                {
                    "_id": hashlib.sha1(id.encode()).hexdigest()[:24],
                    "id": id,
                    "modelId": id,
                    "author": id.split("/")[0],
                    "sha": sha,
                    "private": repo.private,
                    "disabled": False,
                    "gated": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": siblings,
                    "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                    "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                    "usedStorage": sum(len(c) for c in files.values()),
                },
            )

        def resolve(self, id: str, rev: str, file: str, kind: str = "models") -> None:
            repo = self._repo(kind, id)
            files = None if repo is None else self._snapshot(repo, rev)
            if repo is None or files is None:
                return
            if file not in files:
                self._error(404, "EntryNotFound", f"{file} does not exist on {rev!r}")
                return
            content = files[file]
            sha = repo.sha if unquote(rev) in ("main", "refs/heads/main") else unquote(rev)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(content)))
            self.send_header("ETag", f'"{_git_blob_sha(content)}"')
            self.send_header("X-Repo-Commit", sha)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

    return Handler
