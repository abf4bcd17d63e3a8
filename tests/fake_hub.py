"""A loopback stand-in for the Hugging Face Hub, for tests that push and load models without the network.

    with FakeHub(token="dummy") as hub:          # http://127.0.0.1:<free port>
        os.environ["HF_ENDPOINT"] = hub.url
        ... HfApi(endpoint=hub.url).create_repo(...) / create_commit(...) / from_pretrained(repo_id) ...

It speaks the part of the Hub's HTTP protocol that `huggingface_hub` 2.x and Transformers use to create a repo,
commit files and read them back, with the Hub's status codes and headers (so `huggingface_hub` raises the same
errors it raises against the real Hub):

- `POST /api/repos/create`: a new repo starts with a first commit holding `.gitattributes`, as on the Hub; 409 when
  the repo exists (`create_repo(exist_ok=True)` relies on it).
- `POST /api/validate-yaml`: parses README.md's YAML front matter; 400 with `errors` if it is not a mapping.
- `POST /api/{type}s/{repo}/preupload/{rev}`: every file is `"regular"` (inline, base64 in the commit), never LFS or
  Xet, with the `oid` (git blob sha1) of the file already at that path so unchanged files are skipped.
- `POST /api/{type}s/{repo}/commit/{rev}`: the NDJSON payload (`header`, `file` base64, `deletedFile`,
  `deletedFolder`); `lfsFile` and copies are refused (422: this server stores no LFS objects); `parentCommit` is
  checked.
- `HEAD|GET /{repo}/resolve/{rev}/{path}` (and `/datasets/...`): `X-Repo-Commit`, `ETag` (git blob sha1),
  `Content-Length`, byte ranges; 404 with `X-Error-Code: EntryNotFound` / `RevisionNotFound` / `RepoNotFound`.
- `GET /api/{type}s/{repo}[/revision/{rev}]`: repo info (sha, siblings, tags and cardData from README.md).
- `GET /api/{type}s/{repo}/tree/{rev}[/{path}]` (`recursive`), `POST .../paths-info/{rev}`: file listings.
- `GET /api/whoami-v2`, `GET /api/agent-harnesses` (huggingface_hub's user-agent builder asks for it).

Revisions are branch names or full commit shas. Everything is kept in memory. Every request is recorded in
`hub.requests` as (method, path); requests no route answers are also in `hub.unhandled` (answered 404).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

GITATTRIBUTES = b"".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n".encode() for pattern in (
    "*.bin", "*.h5", "*.onnx", "*.pt", "*.pth", "*.safetensors", "*.msgpack", "*.tar.*", "*.zip", "*tfevents*"))
API_ACTIONS = {"revision", "tree", "preupload", "commit", "paths-info", "refs", "commits", "resolve"}
TYPE_PREFIX = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    parent: str | None
    title: str
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: str
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], parent: str | None, title: str, branch: str = "main") -> Commit:
        date = _now()
        digest = hashlib.sha1(json.dumps([parent, title, date, len(self.commits),
                                          sorted((p, git_blob_sha1(c)) for p, c in files.items())]).encode())
        commit = Commit(digest.hexdigest(), dict(files), parent, title, date)
        self.commits[commit.sha] = commit
        self.refs[branch] = commit.sha
        return commit

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.refs:
            return self.commits[self.refs[revision]]
        return self.commits.get(revision)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.extra = extra or {}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _front_matter(readme: bytes | None) -> dict:
    if not readme:
        return {}
    text = readme.decode("utf-8", "replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    data = yaml.safe_load(text[3:end])
    return data if isinstance(data, dict) else {}


class FakeHub:
    """The server; `start()` / `stop()` or use it as a context manager. `url` is its endpoint."""

    def __init__(self, token: str | None = "dummy", host: str = "127.0.0.1"):
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> "FakeHub":
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests
    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        with self.lock:
            return dict(self.repos[(repo_type, repo_id)].resolve(revision).files)

    # ------------------------------------------------------------------ repo lookup
    def get_repo(self, repo_type: str, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository Not Found for {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def split_repo(self, repo_type: str, segments: list[str]) -> tuple[str, list[str]]:
        """`ns/name/rest...` or `name/rest...` (legacy repos without a namespace)."""
        if len(segments) >= 2 and ((repo_type, "/".join(segments[:2])) in self.repos or
                                   segments[1] not in API_ACTIONS):
            return "/".join(segments[:2]), segments[2:]
        return segments[0], segments[1:]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub
    server_version = "FakeHub/1.0"

    def log_message(self, format, *args):  # keep test output clean
        pass

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        return self.hub.token is None or auth[len("Bearer "):] == self.hub.token

    def _require_auth(self) -> None:
        if not self.headers.get("Authorization"):
            raise HubError(401, "Unauthorized: this endpoint needs a token")
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
              content_type: str = "application/json", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _dispatch(self) -> None:
        body = self._body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else b""
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        with self.hub.lock:
            self.hub.requests.append((self.command, parts.path))
        try:
            handled = self._route(path, parts.path, query, body)
            if not handled:
                with self.hub.lock:
                    self.hub.unhandled.append((self.command, parts.path))
                raise HubError(404, f"FakeHub: no route for {self.command} {parts.path}")
        except HubError as error:
            headers = dict(error.headers)
            if error.code:
                headers["X-Error-Code"] = error.code
            headers["X-Error-Message"] = error.message
            self._json({"error": error.message, **error.extra}, error.status, headers)
        except Exception as error:  # a bug here must show up as a failed request, not a hung client
            self._json({"error": f"FakeHub internal error: {type(error).__name__}: {error}"}, 500)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # ------------------------------------------------------------------ routes
    def _route(self, path: str, raw_path: str, query: dict, body: bytes) -> bool:
        method = self.command
        if path == "/api/agent-harnesses" and method == "GET":
            self._json({"standardEnvVars": [], "harnesses": {}})
            return True
        if path == "/api/whoami-v2" and method == "GET":
            self._require_auth()
            self._json({"type": "user", "name": "fake-user", "fullname": "Fake User", "orgs": [],
                        "auth": {"type": "access_token", "accessToken": {"displayName": "dummy", "role": "write"}}})
            return True
        if path == "/api/repos/create" and method == "POST":
            self._create_repo(json.loads(body or b"{}"))
            return True
        if path == "/api/validate-yaml" and method == "POST":
            self._validate_yaml(json.loads(body or b"{}"))
            return True
        segments = [s for s in raw_path.split("/") if s]
        if len(segments) >= 3 and segments[0] == "api" and segments[1] in TYPE_PREFIX:
            return self._api(TYPE_PREFIX[segments[1]], [unquote(s) for s in segments[2:]], query, body)
        if method in ("GET", "HEAD"):
            repo_type = "model"
            if segments and segments[0] in ("datasets", "spaces"):
                repo_type, segments = TYPE_PREFIX[segments[0]], segments[1:]
            for n in (2, 1):
                if len(segments) > n + 1 and segments[n] == "resolve":
                    repo_id = "/".join(unquote(s) for s in segments[:n])
                    revision = unquote(segments[n + 1])
                    filename = "/".join(unquote(s) for s in segments[n + 2:])
                    self._resolve(repo_type, repo_id, revision, filename)
                    return True
        return False

    def _api(self, repo_type: str, segments: list[str], query: dict, body: bytes) -> bool:
        hub, method = self.hub, self.command
        repo_id, rest = hub.split_repo(repo_type, segments)
        with hub.lock:
            if not rest and method == "GET":
                repo = hub.get_repo(repo_type, repo_id, self._authorized())
                self._json(self._info(repo, repo.resolve("main"), query))
                return True
            if len(rest) == 2 and rest[0] == "revision" and method == "GET":
                repo = hub.get_repo(repo_type, repo_id, self._authorized())
                self._json(self._info(repo, self._commit(repo, rest[1]), query))
                return True
            if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
                repo = hub.get_repo(repo_type, repo_id, self._authorized())
                commit = self._commit(repo, rest[1])
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                self._json(self._tree(commit, "/".join(rest[2:]).strip("/"), recursive))
                return True
            if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
                repo = hub.get_repo(repo_type, repo_id, self._authorized())
                commit = self._commit(repo, rest[1])
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    paths = json.loads(body or b"{}").get("paths", [])
                else:
                    paths = parse_qs(body.decode()).get("paths", [])
                self._json([entry for p in paths for entry in self._tree(commit, p.strip("/"), False, exact=True)])
                return True
            if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
                self._require_auth()
                repo = hub.get_repo(repo_type, repo_id, True)
                commit = self._commit(repo, rest[1])
                files = json.loads(body or b"{}").get("files", [])
                self._json({"files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                     "oid": git_blob_sha1(commit.files[f["path"]]) if f["path"] in commit.files else None}
                    for f in files]})
                return True
            if len(rest) == 2 and rest[0] == "commit" and method == "POST":
                self._require_auth()
                repo = hub.get_repo(repo_type, repo_id, True)
                if query.get("create_pr"):
                    raise HubError(400, "FakeHub does not implement pull requests")
                self._commit_ndjson(repo, rest[1], body)
                return True
        return False

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ write side
    def _create_repo(self, payload: dict) -> None:
        self._require_auth()
        name, organization = payload.get("name"), payload.get("organization")
        if not name:
            raise HubError(400, "name is required")
        repo_type = payload.get("type") or "model"
        repo_id = f"{organization}/{name}" if organization else f"fake-user/{name}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.url}/{prefix}{repo_id}"
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:
                # the Hub answers 409 with the repo's url, which create_repo(exist_ok=True) returns
                raise HubError(409, "You already created this repo", extra={"url": url})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = Repo(repo_type, repo_id, private, _now())
            repo.commit({".gitattributes": GITATTRIBUTES}, None, "initial commit")
            self.hub.repos[(repo_type, repo_id)] = repo
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict) -> None:
        try:
            _front_matter(payload.get("content", "").encode())
        except yaml.YAMLError as error:
            self._json({"errors": [{"message": f"invalid YAML: {error}"}], "warnings": []}, 400)
            return
        self._json({"errors": [], "warnings": []})

    def _commit_ndjson(self, repo: Repo, revision: str, body: bytes) -> None:
        if revision not in repo.refs:
            raise HubError(404, f"Invalid rev id: {revision} (commits go to a branch)", "RevisionNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        head = repo.commits[repo.refs[revision]]
        parent = header.get("parentCommit")
        if parent and not head.sha.startswith(parent):
            raise HubError(412, f"A commit has happened since {parent}: the branch head is {head.sha}")
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(prefix)}
            else:  # lfsFile, copies: this server keeps no LFS storage and preupload never asks for it
                raise HubError(422, f"FakeHub does not implement {key!r} operations (only regular files)")
        commit = repo.commit(files, head.sha, header.get("summary") or "", revision)
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self._json({"success": True, "commitOid": commit.sha, "commitMessage": commit.title,
                    "commitUrl": f"{self.hub.url}/{prefix}{repo.repo_id}/commit/{commit.sha}",
                    "hookOutput": "", "pullRequestUrl": None})

    # ------------------------------------------------------------------ read side
    def _resolve(self, repo_type: str, repo_id: str, revision: str, filename: str) -> None:
        with self.hub.lock:
            repo = self.hub.get_repo(repo_type, repo_id, self._authorized())
            commit = self._commit(repo, revision)
            data = commit.files.get(filename)
        if data is None:
            raise HubError(404, f"Entry not found: {filename}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        etag = git_blob_sha1(data)
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Disposition": f'inline; filename="{quote(filename.rsplit("/", 1)[-1])}"'}
        status, start, end = 200, 0, len(data)
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes=") and self.command == "GET":
            first, _, last = range_header[len("bytes="):].split(",")[0].partition("-")
            start = int(first) if first else max(0, len(data) - int(last))
            end = int(last) + 1 if first and last else len(data)
            if start >= len(data):
                raise HubError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        self._send(status, data[start:end], headers, content_type="application/octet-stream")

    def _info(self, repo: Repo, commit: Commit, query: dict) -> dict:
        card = {}
        try:
            card = _front_matter(commit.files.get("README.md"))
        except yaml.YAMLError:
            pass
        tags = list(card.get("tags") or [])
        config = {}
        if "config.json" in commit.files:
            try:
                full = json.loads(commit.files["config.json"])
                config = {k: full[k] for k in ("architectures", "model_type", "auto_map") if k in full}
            except ValueError:
                pass
        if config.get("auto_map") and "custom_code" not in tags:
            tags.append("custom_code")
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = [{"rfilename": path, **({"size": len(data), "blobId": git_blob_sha1(data)} if blobs else {})}
                    for path, data in sorted(commit.files.items())]
        return {"_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.sha,
                "lastModified": commit.date, "createdAt": repo.created, "private": repo.private,
                "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": tags,
                "pipeline_tag": card.get("pipeline_tag"), "library_name": card.get("library_name"),
                "cardData": card or None, "config": config or None, "siblings": siblings,
                "usedStorage": sum(len(d) for d in commit.files.values())}

    def _tree(self, commit: Commit, path: str, recursive: bool, exact: bool = False) -> list[dict]:
        """Entries under folder `path` (or, with `exact`, the entry at `path` itself)."""
        files = commit.files
        folders = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        if exact:
            if path in files:
                return [self._file_entry(path, files[path])]
            return [{"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0,
                     "path": path}] if path in folders else []
        if path and path not in folders:
            if path in files:
                return [self._file_entry(path, files[path])]
            raise HubError(404, f"{path} does not exist on {commit.sha}", "EntryNotFound",
                           {"X-Repo-Commit": commit.sha})
        prefix = path + "/" if path else ""
        entries = []
        for folder in sorted(folders):
            if folder.startswith(prefix) and (recursive or "/" not in folder[len(prefix):]):
                entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0,
                                "path": folder})
        for name in sorted(files):
            if name.startswith(prefix) and (recursive or "/" not in name[len(prefix):]):
                entries.append(self._file_entry(name, files[name]))
        return entries

    @staticmethod
    def _file_entry(path: str, data: bytes) -> dict:
        return {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}


__all__ = ["FakeHub", "git_blob_sha1"]
