"""A loopback Hugging Face Hub for tests: in-memory dataset/model repos behind the Hub's HTTP routes.

Must not: bind to anything but 127.0.0.1, print, or be imported by rd3kit itself. It speaks just enough of
the protocol for the real `huggingface_hub` client (Xet disabled): create, validate-yaml, preupload, LFS
batch + PUT, ndjson commits, tags, branches, repo info, refs, commits, tree, paths-info and resolve.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# The real Hub stores binary or large files in LFS; these rules mirror its defaults closely enough.
LFS_SIZE = 10 * 1024 * 1024
LFS_SUFFIXES = (".parquet", ".safetensors", ".pt", ".zip", ".bin", ".npz", ".tar", ".gz", ".jpg", ".png")
_TYPES = "datasets|models|spaces"
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = rf"/api/(?P<t>{_TYPES})/{_REPO}"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def oid(self) -> str:  # what git stores: the pointer for LFS files, the bytes otherwise
        return git_blob_sha1(self.pointer if self.lfs else self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, Blob]
    title: str
    message: str
    date: str


@dataclass
class Repo:
    repo_id: str
    kind: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        for prefix, table in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if rev.startswith(prefix):
                rev = rev[len(prefix):]
                return self.commits[table[rev]] if rev in table else None
        oid = self.branches.get(rev) or self.tags.get(rev) or (rev if rev in self.commits else None)
        return self.commits.get(oid) if oid else None


class HubState:
    """Repositories, LFS objects and a request log shared by the handler threads."""

    def __init__(self, token: str | None) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.token = token
        self.log: list[tuple[str, str, bool]] = []  # method, path, whether an Authorization header came
        self.connections: set[socket.socket] = set()  # open keep-alive sockets, closed by `stop()`
        self.lock = threading.Lock()
        self._clock = 0

    def new_commit(self, repo: Repo, parent: str | None, files: dict[str, Blob], title: str, message: str = "") -> str:
        self._clock += 1
        ident = json.dumps([parent, sorted((p, b.oid) for p, b in files.items()), title, self._clock])
        oid = hashlib.sha1(ident.encode()).hexdigest()
        date = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", ".000Z")
        repo.commits[oid] = Commit(oid, parent, dict(files), title, message, date)
        return oid

    def create(self, kind: str, repo_id: str) -> Repo:
        repo = Repo(repo_id, kind)
        attrs = Blob(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n", lfs=False)
        repo.branches["main"] = self.new_commit(repo, None, {".gitattributes": attrs}, "initial commit")
        self.repos[(kind, repo_id)] = repo
        return repo

    def seed(self, repo_id: str, files: dict[str, bytes], kind: str = "datasets", tag: str | None = None) -> str:
        """Commit `files` on main directly (no client), creating the repo if needed; returns the commit id."""
        with self.lock:
            repo = self.repos.get((kind, repo_id)) or self.create(kind, repo_id)
            head = repo.commits[repo.branches["main"]]
            merged = dict(head.files) | {p: Blob(d, _is_lfs(p, d)) for p, d in files.items()}
            oid = self.new_commit(repo, head.oid, merged, "seed")
            repo.branches["main"] = oid
            if tag:
                repo.tags[tag] = oid
            return oid


def _is_lfs(path: str, sample: bytes, size: int | None = None) -> bool:
    size = len(sample) if size is None else size
    return size > LFS_SIZE or path.endswith(LFS_SUFFIXES) or b"\0" in sample[:512]


class HubError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every keep-alive request waits ~40 ms for a delayed ACK
    state: HubState  # set on the subclass the server is built with

    def log_message(self, *args) -> None:  # the tests read `state.log`, never stderr
        pass

    def setup(self) -> None:
        super().setup()
        self.state.connections.add(self.connection)

    def finish(self) -> None:
        self.state.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # -- plumbing -------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.body = self._read_body()  # drained before any reply, errors included
        self.state.log.append((method, url.path, "Authorization" in self.headers))
        try:
            for verbs, pattern, name in ROUTES:
                match = re.fullmatch(pattern, url.path)
                if method in verbs and match:
                    args = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                    with self.state.lock:
                        getattr(self, name)(method=method, **args)
                    return
            raise HubError(404, "NotFound", f"no route for {method} {url.path}")
        except HubError as err:
            self._send(err.status, {"error": err.message}, {"X-Error-Code": err.code, "X-Error-Message": err.message})

    def _send(self, status: int, obj: object = None, headers: dict | None = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else (json.dumps(obj).encode() if obj is not None else b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as exc:
            raise HubError(400, "BadRequest", f"invalid JSON body: {exc}") from None

    def _auth(self) -> None:
        if self.state.token is not None and self.headers.get("Authorization") != f"Bearer {self.state.token}":
            raise HubError(401, "Unauthorized", "invalid or missing token")

    def _repo(self, t: str | None, repo: str) -> Repo:
        found = self.state.repos.get((t or "models", repo))
        if found is None:
            raise HubError(404, "RepoNotFound", f"Repository {repo} not found")
        return found

    def _commit(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return commit

    def _base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    # -- write side -----------------------------------------------------------------------------------
    def create_repo(self, method: str) -> None:
        self._auth()
        body = self._json()
        kind = (body.get("type") or "model") + "s"
        repo_id = f"{body.get('organization') or 'rd3kit-test'}/{body['name']}"
        prefix = "" if kind == "models" else f"{kind}/"
        url = f"{self._base()}/{prefix}{repo_id}"
        if (kind, repo_id) in self.state.repos:  # like the Hub, a 409 still names the repo's url
            message = "You already created this repo"
            self._send(409, {"error": message, "url": url}, {"X-Error-Code": "RepoExists", "X-Error-Message": message})
            return
        self.state.create(kind, repo_id)
        self._send(200, {"url": url, "name": repo_id})

    def validate_yaml(self, method: str) -> None:
        content = self._json().get("content", "")
        errors = []
        if content.startswith("---"):
            try:
                meta = yaml.safe_load(content.split("---", 2)[1]) or {}
                if not isinstance(meta, dict):
                    errors.append({"message": "metadata must be a mapping"})
            except (yaml.YAMLError, IndexError) as exc:
                errors.append({"message": f"invalid YAML: {exc}"})
        self._send(200 if not errors else 400, {"errors": errors, "warnings": []})

    def preupload(self, method: str, t: str, repo: str, rev: str) -> None:
        self._auth()
        head = self._commit(self._repo(t, repo), rev)
        files = []
        for item in self._json().get("files", []):
            sample = base64.b64decode(item.get("sample", ""))
            old = head.files.get(item["path"])
            mode = "lfs" if _is_lfs(item["path"], sample, item.get("size")) else "regular"
            files.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False,
                          "oid": old.oid if old else None})
        self._send(200, {"files": files, "commitOid": head.oid})

    def lfs_batch(self, method: str, t: str | None, repo: str) -> None:
        self._auth()
        self._repo(t or "models", repo)
        objects = []
        for obj in self._json().get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.state.lfs:
                entry["actions"] = {"upload": {"href": f"{self._base()}/lfs-upload/{obj['oid']}", "header": {}}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_put(self, method: str, oid: str) -> None:
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "BadRequest", "uploaded bytes do not match the announced sha256")
        self.state.lfs[oid] = self.body
        self._send(200, {})

    def commit(self, method: str, t: str, repo: str, rev: str) -> None:
        self._auth()
        target = self._repo(t, repo)
        if rev not in target.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev} (commits go to a branch)")
        head = target.commits[target.branches[rev]]
        files, header = dict(head.files), {}
        for line in self.body.decode().splitlines():
            if line.strip():
                header = self._apply(json.loads(line), files) or header
        if header.get("parentCommit") not in (None, head.oid):
            raise HubError(412, "PreconditionFailed", "parentCommit is not the head of the branch")
        oid = self.state.new_commit(target, head.oid, files, header.get("summary", ""), header.get("description", ""))
        target.branches[rev] = oid
        prefix = "" if t == "models" else f"{t}/"
        self._send(200, {"commitOid": oid, "commitUrl": f"{self._base()}/{prefix}{repo}/commit/{oid}",
                         "pullRequestUrl": None})

    def _apply(self, op: dict, files: dict[str, Blob]) -> dict | None:
        key, value = op["key"], op["value"]
        if key == "header":
            return value
        if key == "file":
            files[value["path"]] = Blob(base64.b64decode(value["content"]), lfs=False)
        elif key == "lfsFile":
            if value["oid"] not in self.state.lfs:
                raise HubError(422, "BadRequest", f"LFS object {value['oid']} was never uploaded")
            files[value["path"]] = Blob(self.state.lfs[value["oid"]], lfs=True)
        elif key == "deletedFile":
            files.pop(value["path"], None)
        elif key == "deletedFolder":
            for path in [p for p in files if p.startswith(value["path"].rstrip("/") + "/")]:
                del files[path]
        else:
            raise HubError(400, "BadRequest", f"unknown commit operation {key!r}")
        return None

    def tag(self, method: str, t: str, repo: str, rev: str) -> None:
        self._auth()
        target = self._repo(t, repo)
        name = self._json()["tag"]
        if name in target.tags:
            raise HubError(409, "Conflict", f"tag {name} already exists")
        target.tags[name] = self._commit(target, rev).oid
        self._send(200, {})

    def branch(self, method: str, t: str, repo: str, name: str) -> None:
        self._auth()
        target = self._repo(t, repo)
        start = self._json().get("startingPoint") or "main"
        if name in target.branches:
            raise HubError(409, "Conflict", f"branch {name} already exists")
        target.branches[name] = self._commit(target, start).oid
        self._send(200, {})

    # -- read side ------------------------------------------------------------------------------------
    def info(self, method: str, t: str, repo: str, rev: str | None) -> None:
        target = self._repo(t, repo)
        commit = self._commit(target, rev or "main")
        blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sib = {"rfilename": path}
            if blobs:
                sib |= {"blobId": blob.oid, "size": len(blob.data)}
                if blob.lfs:
                    sib["lfs"] = {"sha256": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer)}
            siblings.append(sib)
        self._send(200, {
            "id": repo, "_id": hashlib.md5(repo.encode()).hexdigest()[:24], "author": repo.split("/")[0],
            "sha": commit.oid, "lastModified": commit.date, "createdAt": commit.date, "private": False,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
            "cardData": _card_data(commit), "siblings": siblings,
        })

    def refs(self, method: str, t: str, repo: str) -> None:
        target = self._repo(t, repo)
        rows = lambda table, kind: [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": c} for n, c in table.items()]
        self._send(200, {"branches": rows(target.branches, "heads"), "tags": rows(target.tags, "tags"), "converts": []})

    def commits(self, method: str, t: str, repo: str, rev: str) -> None:
        target = self._repo(t, repo)
        commit, out = self._commit(target, rev), []
        while commit is not None:
            out.append({"id": commit.oid, "title": commit.title, "message": commit.message, "date": commit.date,
                        "authors": [{"user": "rd3kit-test"}]})
            commit = target.commits.get(commit.parent) if commit.parent else None
        self._send(200, out)

    def tree(self, method: str, t: str, repo: str, rev: str, path: str | None) -> None:
        commit = self._commit(self._repo(t, repo), rev)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = (path or "").strip("/")
        entries = _listing(commit, prefix, recursive)
        if prefix and not entries and prefix not in commit.files:
            raise HubError(404, "EntryNotFound", f"{prefix} does not exist at {rev}")
        self._send(200, entries)

    def paths_info(self, method: str, t: str, repo: str, rev: str) -> None:
        commit = self._commit(self._repo(t, repo), rev)
        form = parse_qs(self.body.decode())
        wanted = form.get("paths", [])
        out = [_file_entry(p, commit.files[p]) for p in wanted if p in commit.files]
        dirs = {p for p in wanted if p not in commit.files and any(f.startswith(p.rstrip("/") + "/") for f in commit.files)}
        out += [{"type": "directory", "oid": git_blob_sha1(d.encode()), "path": d} for d in sorted(dirs)]
        self._send(200, out)

    def resolve(self, method: str, t: str | None, repo: str, rev: str, path: str) -> None:
        commit = self._commit(self._repo(t or "models", repo), rev)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist at {rev}")
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers |= {"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data))}
        data, status = blob.data, 200
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged:
            start = int(ranged.group(1))
            end = int(ranged.group(2)) if ranged.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        self._send(status, headers=headers, raw=data)


def _file_entry(path: str, blob: Blob) -> dict:
    entry = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path}
    if blob.lfs:
        entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer)}
    return entry


def _listing(commit: Commit, prefix: str, recursive: bool) -> list[dict]:
    base = f"{prefix}/" if prefix else ""
    files, dirs = [], set()
    for path, blob in sorted(commit.files.items()):
        if not path.startswith(base):
            continue
        parts = path[len(base):].split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            dirs.add(base + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            files.append(_file_entry(path, blob))
    return [{"type": "directory", "oid": git_blob_sha1(d.encode()), "path": d} for d in sorted(dirs)] + files


def _card_data(commit: Commit) -> dict:
    readme = commit.files.get("README.md")
    if readme is None or not readme.data.startswith(b"---"):
        return {}
    try:
        return yaml.safe_load(readme.data.decode().split("---", 2)[1]) or {}
    except (yaml.YAMLError, IndexError):
        return {}


ROUTES = [
    (("POST",), r"/api/repos/create", "create_repo"),
    (("POST",), r"/api/validate-yaml", "validate_yaml"),
    (("GET",), rf"{_API}(?:/revision/(?P<rev>[^/]+))?", "info"),
    (("GET",), rf"{_API}/refs", "refs"),
    (("GET",), rf"{_API}/commits/(?P<rev>[^/]+)", "commits"),
    (("GET",), rf"{_API}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
    (("POST",), rf"{_API}/paths-info/(?P<rev>[^/]+)", "paths_info"),
    (("POST",), rf"{_API}/preupload/(?P<rev>[^/]+)", "preupload"),
    (("POST",), rf"{_API}/commit/(?P<rev>[^/]+)", "commit"),
    (("POST",), rf"{_API}/tag/(?P<rev>[^/]+)", "tag"),
    (("POST",), rf"{_API}/branch/(?P<name>.+)", "branch"),
    (("POST",), rf"/(?:(?P<t>{_TYPES})/)?{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    (("PUT",), r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_put"),
    (("GET", "HEAD"), rf"/(?:(?P<t>{_TYPES})/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]


class LoopbackHub:
    """Start with `start()` (or as a context manager); `endpoint` is http://127.0.0.1:PORT; `stop()` takes it down."""

    def __init__(self, token: str | None = None) -> None:
        self.state = HubState(token)
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LoopbackHub":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()
        for conn in list(self.state.connections):  # a down server also drops its keep-alive connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "LoopbackHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
