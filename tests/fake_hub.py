"""A loopback stand-in for the Hugging Face Hub: push a model folder and load it back without the network.

    with FakeHub(token="dummy") as hub:          # http://127.0.0.1:<free port>
        HfApi(endpoint=hub.url, token="dummy").upload_folder(...)   # or from_pretrained with HF_ENDPOINT=hub.url

It answers the Hub's public HTTP protocol for what `create_repo` + `upload_folder` write and what
`hf_hub_download` / `from_pretrained` read, with the Hub's status codes and `X-Error-Code` headers, so that
`huggingface_hub` behaves (and raises) as it does against the real Hub. Model repos only, `namespace/name` ids only:

- `POST /api/repos/create`: a new repo holds `.gitattributes` in a first commit, as on the Hub; 409 with the repo's
  url when it exists (what `create_repo(exist_ok=True)` relies on).
- `POST /api/validate-yaml`: README.md's front matter must be a YAML mapping (400 with `errors` otherwise).
- `POST /api/models/{repo}/preupload/{rev}`: every file is "regular" (base64 inside the commit), never LFS or Xet;
  `oid` is the git blob sha1 of the file already at that path, so unchanged files are skipped.
- `POST /api/models/{repo}/commit/{rev}`: the NDJSON commit (`header`, then `file` lines); other operations are
  refused with 422, as this server stores no LFS objects. The answer carries `commitUrl`.
- `GET /api/models/{repo}[/revision/{rev}]`: repo info (sha, siblings, private, tags and cardData from README.md).
- `GET /api/models/{repo}/tree/{rev}[/{path}]`: the files under a folder (404 `EntryNotFound` for no such folder).
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: the file, with `ETag` (git blob sha1) and `X-Repo-Commit`.

Requests of other routes are answered 404. Every request is recorded in `hub.requests` as (method, path).
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
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"


def git_blob_sha1(data: bytes) -> str:
    """The Hub's `oid` / `ETag` of a regular file: its git blob hash."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def front_matter(readme: bytes | None) -> dict:
    """The YAML metadata block of a README.md (empty without one); raises yaml.YAMLError / ValueError if bad."""
    text = (readme or b"").decode("utf-8")
    match = re.match(r"\s*---\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, flags=re.DOTALL)
    if not match:
        return {}
    data = yaml.safe_load(match.group(1)) or {}
    if not isinstance(data, dict):
        raise ValueError("the metadata block is not a mapping")
    return data


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    title: str
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)  # main's history, oldest first

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def commit(self, files: dict[str, bytes], title: str) -> Commit:
        digest = hashlib.sha1(json.dumps([self.repo_id, len(self.commits), title,
                                          sorted((p, git_blob_sha1(c)) for p, c in files.items())]).encode())
        self.commits.append(Commit(digest.hexdigest(), dict(files), title,
                                   time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())))
        return self.head

    def resolve(self, revision: str) -> Commit:
        """`main` or a full commit sha; the Hub's 404 otherwise."""
        for commit in reversed(self.commits):
            if revision in ("main", commit.sha):
                return commit
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class HubError(Exception):
    """An error answer: status, message, and the `X-Error-Code` huggingface_hub maps to its exception types."""

    def __init__(self, status: int, message: str, code: str | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body or {}


class FakeHub:
    """The server; use it as a context manager (or `start()` / `stop()`). `url` is its endpoint."""

    def __init__(self, token: str = "dummy", host: str = "127.0.0.1"):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer((host, 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-hub", daemon=True)

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def files(self, repo_id: str) -> dict[str, bytes]:
        """The files of `repo_id` at the head of main."""
        with self.lock:
            return dict(self.repo(repo_id).head.files)

    def repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, f"Repository Not Found for {repo_id}", "RepoNotFound")
        return self.repos[repo_id]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's client expects
    hub: FakeHub

    def log_message(self, format, *args):  # keep test output clean
        pass

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        with self.hub.lock:
            self.hub.requests.append((self.command, parts.path))
        try:
            body = self._body()
            with self.hub.lock:
                if not self._route(path, query, body):
                    raise HubError(404, f"FakeHub: no route for {self.command} {parts.path}")
        except HubError as error:
            headers = {"X-Error-Message": error.message, **({"X-Error-Code": error.code} if error.code else {})}
            self._json({"error": error.message, **error.body}, error.status, headers)
        except Exception as error:  # a bug here must show up as a failed request, not a hung client
            self._json({"error": f"FakeHub internal error: {type(error).__name__}: {error}"}, 500)

    do_GET = do_HEAD = do_POST = _dispatch

    def _route(self, path: str, query: dict, body: bytes) -> bool:
        method, match = self.command, None

        def route(verbs: str, pattern: str) -> bool:
            nonlocal match
            match = re.fullmatch(pattern, path) if method in verbs.split("|") else None
            return match is not None

        if route("POST", "/api/repos/create"):
            self._create_repo(json.loads(body or b"{}"))
        elif route("POST", "/api/validate-yaml"):
            self._validate_yaml(json.loads(body or b"{}").get("content", ""))
        elif route("POST", f"/api/models/{_REPO}/preupload/{_REV}"):
            self._preupload(match["repo"], match["rev"], json.loads(body or b"{}").get("files", []))
        elif route("POST", f"/api/models/{_REPO}/commit/{_REV}"):
            self._commit(match["repo"], match["rev"], body)
        elif route("GET", f"/api/models/{_REPO}(?:/revision/{_REV})?"):
            repo = self.hub.repo(match["repo"])
            self._json(_info(repo, repo.resolve(match["rev"] or "main"), query))
        elif route("GET", f"/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.*))?"):
            commit = self.hub.repo(match["repo"]).resolve(match["rev"])
            self._json(_tree(commit, (match["path"] or "").strip("/"), query.get("recursive") == ["true"]))
        elif route("GET|HEAD", f"/{_REPO}/resolve/{_REV}/(?P<path>.+)"):
            self._resolve(match["repo"], match["rev"], match["path"])
        return match is not None

    # ------------------------------------------------------------------ write side
    def _require_token(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.hub.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _create_repo(self, payload: dict) -> None:
        self._require_token()
        repo_id = f"{payload.get('organization') or 'fake-user'}/{payload['name']}"
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.repos:
            raise HubError(409, "You already created this repo", body={"url": url})
        private = payload.get("visibility") == "private" or payload.get("private") is True  # new / older clients
        repo = self.hub.repos[repo_id] = Repo(repo_id, private)
        repo.commit({".gitattributes": GITATTRIBUTES}, "initial commit")
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, content: str) -> None:
        try:
            front_matter(content.encode())
        except (yaml.YAMLError, ValueError) as error:
            self._json({"errors": [{"message": f"invalid metadata: {error}"}], "warnings": []}, 400)
            return
        self._json({"errors": [], "warnings": []})

    def _preupload(self, repo_id: str, revision: str, files: list[dict]) -> None:
        self._require_token()
        existing = self.hub.repo(repo_id).resolve(revision).files
        self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                               "oid": git_blob_sha1(existing[f["path"]]) if f["path"] in existing else None}
                              for f in files]})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        self._require_token()
        repo = self.hub.repo(repo_id)
        if revision != "main":
            raise HubError(404, f"Invalid rev id: {revision} (this server has only main)", "RevisionNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        files = dict(repo.head.files)
        for line in lines[1:]:
            if line.get("key") != "file" or line["value"].get("encoding", "base64") != "base64":
                raise HubError(422, f"FakeHub does not implement {line.get('key')!r} operations (only regular files)")
            files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        commit = repo.commit(files, lines[0]["value"].get("summary") or "")
        self._json({"success": True, "commitOid": commit.sha, "commitMessage": commit.title,
                    "commitUrl": f"{self.hub.url}/{repo_id}/commit/{commit.sha}", "pullRequestUrl": None})

    # ------------------------------------------------------------------ read side
    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        commit = self.hub.repo(repo_id).resolve(revision)
        if filename not in commit.files:
            raise HubError(404, f"Entry not found: {filename}", "EntryNotFound")
        data = commit.files[filename]
        self._send(200, data, {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_sha1(data)}"'},
                   "application/octet-stream")

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):  # huggingface_hub sends every body with a Content-Length
            self.close_connection = True  # the unread body would garble the next request on this connection
            raise HubError(411, "FakeHub reads request bodies with a Content-Length only")
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, headers: dict, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers or {})


def _info(repo: Repo, commit: Commit, query: dict) -> dict:
    """The repo info answer: what `model_info` parses and Transformers reads (tags, config, siblings)."""
    try:
        card = front_matter(commit.files.get("README.md"))
    except (yaml.YAMLError, ValueError):
        card = {}
    config = json.loads(commit.files.get("config.json", b"{}"))
    tags = list(card.get("tags") or []) + (["custom_code"] if config.get("auto_map") else [])
    with_blobs = query.get("blobs") == ["true"]
    return {"id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.sha,
            "lastModified": commit.date, "createdAt": repo.commits[0].date, "private": repo.private,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": list(dict.fromkeys(tags)),
            "pipeline_tag": card.get("pipeline_tag"), "library_name": card.get("library_name"),
            "cardData": card or None,
            "config": {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config} or None,
            "siblings": [{"rfilename": p, **({"size": len(d), "blobId": git_blob_sha1(d)} if with_blobs else {})}
                         for p, d in sorted(commit.files.items())]}


def _tree(commit: Commit, folder: str, recursive: bool) -> list[dict]:
    """The tree listing of `folder` (files and sub-folders); 404 `EntryNotFound` if there is no such folder."""
    prefix = folder + "/" if folder else ""
    below = [p[len(prefix):] for p in sorted(commit.files) if p.startswith(prefix)]
    if not below:
        raise HubError(404, f"{folder} does not exist on {commit.sha}", "EntryNotFound")
    entries, folders = [], set()
    for rest in below:
        parts = rest.split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            data = commit.files[prefix + rest]
            entries.append({"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": prefix + rest})
    return [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
            for f in sorted(folders)] + entries


__all__ = ["FakeHub", "front_matter", "git_blob_sha1"]
