"""A loopback stand-in of the Hugging Face Hub HTTP API, for push/pull tests without network.

Standard library only; binds to 127.0.0.1. It implements what ``huggingface_hub`` (2.4), ``transformers`` and
``datasets`` call when pushing and loading model and dataset repos: whoami, repo creation and info, YAML validation,
preupload, classic LFS (batch + PUT), NDJSON commits, tree listings, paths-info and ``resolve`` downloads (HEAD/GET,
with byte ranges). Clients must set ``HF_HUB_DISABLE_XET=1``: Xet storage is not implemented.

Use it in tests with :func:`running_hub` or from a shell::

    python tests/utils/hub_server.py --port 8765   # prints the endpoint; Ctrl-C stops it
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

#: The token the stand-in accepts for writes (and for reading private repos).
DEFAULT_TOKEN = "hf_loopback_test_token"
USER = "loopback-user"
LFS_EXTENSIONS = (".safetensors", ".parquet", ".bin", ".pt", ".pth", ".arrow", ".png", ".jpg", ".jpeg", ".gz")
LFS_MIN_SIZE = 10 * 1024 * 1024


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class StoredFile:
    """One file of a commit snapshot."""

    content: bytes
    lfs: bool

    @property
    def oid(self) -> str:
        return git_blob_sha1(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class Repo:
    """A repository: visibility and its commits, newest last (each a full snapshot path -> file)."""

    repo_type: str
    repo_id: str
    private: bool
    commits: list[tuple[str, str, dict[str, StoredFile]]] = field(default_factory=list)  # (oid, title, files)

    def snapshot(self, revision: str) -> tuple[str, dict[str, StoredFile]] | None:
        """(commit oid, files) at a branch name (only ``main``) or a commit oid; None if unknown."""
        if revision == "main":
            oid, _, files = self.commits[-1]
            return oid, files
        for oid, _, files in self.commits:
            if oid == revision:
                return oid, files
        return None


class HubState:
    """Everything the stand-in stores, shared by the request handlers; requests are logged for assertions."""

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type, repo_id, private)
        oid = hashlib.sha1(f"init {repo_type} {repo_id} {time.time_ns()}".encode()).hexdigest()
        gitattributes = "".join(f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS)
        repo.commits.append((oid, "initial commit", {".gitattributes": StoredFile(gitattributes.encode(), False)}))
        self.repos[(repo_type, repo_id)] = repo
        return repo


_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = r"^/api/(?P<kind>models|datasets|spaces)/" + _REPO


class HubHandler(BaseHTTPRequestHandler):
    """Routes requests to ``handle_<name>`` methods; ``state`` is set on the subclass made by :func:`make_server`."""

    protocol_version = "HTTP/1.1"
    state: HubState
    ROUTES: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("GET", r"^/api/whoami-v2$", "whoami"),
        ("POST", r"^/api/repos/create$", "create_repo"),
        ("POST", r"^/api/validate-yaml$", "validate_yaml"),
        ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?$", "repo_info"),
        ("POST", _API + r"/preupload/(?P<rev>[^/]+)$", "preupload"),
        ("POST", _API + r"/commit/(?P<rev>[^/]+)$", "commit"),
        ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", "tree"),
        ("POST", _API + r"/paths-info/(?P<rev>[^/]+)$", "paths_info"),
        ("POST", r"^/(?:(?P<kind>datasets|spaces)/)?" + _REPO + r"\.git/info/lfs/objects/batch$", "lfs_batch"),
        ("PUT", r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$", "lfs_upload"),
        ("HEAD", r"^/(?:(?P<kind>datasets|spaces)/)?" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
        ("GET", r"^/(?:(?P<kind>datasets|spaces)/)?" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
    )

    # -- plumbing ------------------------------------------------------------------------------------------------

    def log_message(self, fmt: str, *args) -> None:  # quiet: requests are kept in state
        pass

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        path = unquote(split.path)
        status = 404
        try:
            for method, pattern, name in self.ROUTES:
                match = re.match(pattern, path)
                if method == self.command and match:
                    status = getattr(self, f"handle_{name}")(**match.groupdict())
                    break
            else:
                self._body()
                status = self._json(404, {"error": f"loopback hub: no route for {self.command} {path}"})
        except Exception as error:  # noqa: BLE001  (report server bugs to the client instead of hanging up)
            status = self._json(500, {"error": f"loopback hub error: {type(error).__name__}: {error}"})
        self.state.requests.append((self.command, path, status))

    do_GET = do_POST = do_PUT = do_HEAD = _dispatch

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> int:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> int:
        return self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _error(self, status: int, code: str, message: str) -> int:
        return self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.state.token}"

    def _repo(self, kind: str | None, repo: str, write: bool = False) -> Repo | int:
        """The repo, or the status of the error response already sent (401 for writes, 404 when not visible)."""
        repo_type = _TYPES.get(kind or "models", "model")
        if write and not self._authorized():
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        found = self.state.repos.get((repo_type, repo))
        if found is None or (found.private and not self._authorized()):
            return self._error(404, "RepoNotFound", f"Repository not found: {repo}")
        return found

    def _snapshot(self, repo: Repo, rev: str) -> tuple[str, dict[str, StoredFile]] | int:
        snapshot = repo.snapshot(unquote(rev))
        if snapshot is None:
            return self._error(404, "RevisionNotFound", f"Revision not found: {rev}")
        return snapshot

    @staticmethod
    def _entry(path: str, stored: StoredFile) -> dict:
        entry = {"type": "file", "oid": stored.oid, "size": len(stored.content), "path": path}
        if stored.lfs:
            entry["lfs"] = {"oid": stored.sha256, "size": len(stored.content), "pointerSize": 134}
        return entry

    @staticmethod
    def _folder(path: str) -> dict:
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}

    # -- endpoints -----------------------------------------------------------------------------------------------

    def handle_whoami(self) -> int:
        if not self._authorized():
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        token = {"displayName": "loopback", "role": "write"}
        return self._json(
            200, {"type": "user", "name": USER, "orgs": [], "auth": {"type": "access_token", "accessToken": token}}
        )

    def handle_create_repo(self) -> int:
        payload = json.loads(self._body() or b"{}")
        if not self._authorized():
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:
                url = self._repo_url(repo_type, repo_id)
                return self._json(409, {"error": "You already created this repo", "url": url})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            self.state.create_repo(repo_type, repo_id, private)
        return self._json(200, {"url": self._repo_url(repo_type, repo_id), "name": repo_id})

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        host = f"http://{self.headers.get('Host')}"
        return f"{host}/{repo_id}" if repo_type == "model" else f"{host}/{repo_type}s/{repo_id}"

    def handle_validate_yaml(self) -> int:
        self._body()
        return self._json(200, {"errors": [], "warnings": []})

    def handle_repo_info(self, kind: str, repo: str, rev: str | None) -> int:
        found = self._repo(kind, repo)
        if isinstance(found, int):
            return found
        snapshot = self._snapshot(found, rev or "main")
        if isinstance(snapshot, int):
            return snapshot
        oid, files = snapshot
        return self._json(
            200,
            {
                "id": repo,
                "_id": oid[:24],
                "sha": oid,
                "private": found.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": path} for path in sorted(files)],
            },
        )

    def handle_preupload(self, kind: str, repo: str, rev: str) -> int:
        payload = json.loads(self._body())
        found = self._repo(kind, repo, write=True)
        if isinstance(found, int):
            return found
        _, files = found.snapshot("main")
        answer = []
        for item in payload["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["size"] >= LFS_MIN_SIZE or item["path"].endswith(LFS_EXTENSIONS) or b"\0" in sample
            existing = files.get(item["path"])
            answer.append(
                {
                    "path": item["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.oid if existing is not None else None,
                }
            )
        return self._json(200, {"files": answer, "commitOid": found.commits[-1][0]})

    def handle_lfs_batch(self, kind: str | None, repo: str) -> int:
        payload = json.loads(self._body())
        found = self._repo(kind, repo, write=True)
        if isinstance(found, int):
            return found
        host = f"http://{self.headers.get('Host')}"
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{host}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        body = json.dumps({"transfer": "basic", "objects": objects}).encode()
        return self._send(200, body, "application/vnd.git-lfs+json")

    def handle_lfs_upload(self, oid: str) -> int:
        content = self._body()
        if hashlib.sha256(content).hexdigest() != oid:
            return self._error(400, "BadRequest", "sha256 of the uploaded content does not match the oid")
        self.state.lfs_objects[oid] = content
        return self._send(200, b"", "text/plain")

    def handle_commit(self, kind: str, repo: str, rev: str) -> int:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        found = self._repo(kind, repo, write=True)
        if isinstance(found, int):
            return found
        if unquote(rev) != "main":
            return self._error(400, "BadRequest", "the loopback hub only commits to main")
        with self.state.lock:
            _, files = found.snapshot("main")
            files = dict(files)
            title = "commit"
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    title = value.get("summary") or title
                elif key == "file":
                    files[value["path"]] = StoredFile(base64.b64decode(value["content"]), False)
                elif key == "lfsFile":
                    content = self.state.lfs_objects.get(value["oid"])
                    if content is None:
                        return self._error(422, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = StoredFile(content, True)
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: f for p, f in files.items() if not p.startswith(prefix)}
                else:
                    return self._error(400, "BadRequest", f"unsupported commit operation {key!r}")
            oid = hashlib.sha1(f"{found.commits[-1][0]} {title} {time.time_ns()}".encode()).hexdigest()
            found.commits.append((oid, title, files))
        prefix = "" if found.repo_type == "model" else f"{found.repo_type}s/"
        url = f"http://{self.headers.get('Host')}/{prefix}{repo}/commit/{oid}"
        return self._json(200, {"success": True, "commitOid": oid, "commitUrl": url})

    def handle_tree(self, kind: str, repo: str, rev: str, path: str | None) -> int:
        found = self._repo(kind, repo)
        if isinstance(found, int):
            return found
        snapshot = self._snapshot(found, rev)
        if isinstance(snapshot, int):
            return snapshot
        _, files = snapshot
        base = (path or "").strip("/")
        prefix = f"{base}/" if base else ""
        below = sorted(p for p in files if p.startswith(prefix))
        if base and not below:
            return self._error(404, "EntryNotFound", f"{base} does not exist on main")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries: dict[str, dict] = {}
        for file_path in below:
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, self._folder(folder))
            if recursive or len(parts) == 1:
                entries[file_path] = self._entry(file_path, files[file_path])
        return self._json(200, [entries[key] for key in sorted(entries)])

    def handle_paths_info(self, kind: str, repo: str, rev: str) -> int:
        form = parse_qs(self._body().decode())
        found = self._repo(kind, repo)
        if isinstance(found, int):
            return found
        snapshot = self._snapshot(found, rev)
        if isinstance(snapshot, int):
            return snapshot
        _, files = snapshot
        answer = []
        for wanted in form.get("paths", []):
            wanted = wanted.strip("/")
            if wanted in files:
                answer.append(self._entry(wanted, files[wanted]))
            elif any(p.startswith(wanted + "/") for p in files):
                answer.append(self._folder(wanted))
        return self._json(200, answer)

    def handle_resolve(self, kind: str | None, repo: str, rev: str, path: str) -> int:
        if self.command == "GET":
            self._body()
        found = self._repo(kind, repo)
        if isinstance(found, int):
            return found
        snapshot = self._snapshot(found, rev)
        if isinstance(snapshot, int):
            return snapshot
        oid, files = snapshot
        stored = files.get(path)
        if stored is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist at {rev}")
        etag = stored.sha256 if stored.lfs else stored.oid
        headers = {"X-Repo-Commit": oid, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        content, status = stored.content, 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and (match.group(1) or match.group(2)):
            size = len(content)
            if match.group(1):
                start, end = int(match.group(1)), int(match.group(2) or size - 1)
            else:
                start, end = max(0, size - int(match.group(2))), size - 1
            end = min(end, size - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            content, status = content[start : end + 1], 206
        return self._send(status, content, "application/octet-stream", headers)


def make_server(port: int = 0, token: str = DEFAULT_TOKEN) -> tuple[ThreadingHTTPServer, HubState]:
    """A server bound to 127.0.0.1 (``port`` 0 picks a free one) and its state; call ``serve_forever`` to run it."""
    state = HubState(token)
    handler = type("BoundHubHandler", (HubHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server, state


@contextlib.contextmanager
def running_hub(token: str = DEFAULT_TOKEN) -> Iterator[tuple[str, HubState]]:
    """Run the stand-in in a background thread; yields (endpoint URL, state)."""
    server, state = make_server(0, token)
    thread = threading.Thread(target=server.serve_forever, name="loopback-hub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def client_env(endpoint: str, home: Path, token: str = DEFAULT_TOKEN, **extra: str) -> dict[str, str]:
    """The whole environment of a fresh process that talks to the stand-in at ``endpoint`` (set before any HF library
    is imported), with an empty cache under ``home``; ``extra`` adds variables (e.g. ``PYTHONPATH``)."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "HF_HOME": str(home / "hf"),
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the loopback Hub stand-in on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    args = parser.parse_args(argv)
    server, _ = make_server(args.port, args.token)
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"HF_ENDPOINT={endpoint} HF_TOKEN={args.token} HF_HUB_DISABLE_XET=1", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
