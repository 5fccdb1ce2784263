"""A tiny stand-in for the Hugging Face Hub HTTP API, for tests (127.0.0.1, random port, in-memory repos).

It speaks the subset the real `huggingface_hub` client uses to push and download a folder: create repo, create
branch, validate-yaml, preupload (every file "regular"), commit (NDJSON, base64 files), revision info, tree, and
resolve (HEAD + GET); and `list_models` (GET /api/models: search, author, filter, sort, limit, full, expand,
cardData), whose tags are derived from each repo's README.md front matter on main, as the Hub does. Endpoints and
fields follow huggingface_hub's hf_api.py, _commit_api.py and file_download.py.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
import time

import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"  # what the Hub seeds every repo with


def _blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"X-Error-Code": code,
                                                                          "X-Error-Message": message})


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.requests: list[dict] = []  # method, path, authorization
        self.app = self._make_app()
        self.url = None

    # ---------------------------------------------------------------- state
    def _commit(self, repo: dict, parent: str | None, files: dict, message: str) -> str:
        sha = hashlib.sha1(json.dumps([parent, message, time.time_ns(),
                                       sorted((p, _blob_oid(d)) for p, d in files.items())]).encode()).hexdigest()
        repo["commits"][sha] = {"files": files, "parent": parent, "message": message}
        return sha

    def _resolve(self, repo_id: str, rev: str):
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, None, _error(404, "RepoNotFound", f"Repository {repo_id} not found")
        sha = repo["branches"].get(rev) or (rev if rev in repo["commits"] else None)
        if sha is None:
            return repo, None, _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo, sha, None

    # ---------------------------------------------------------------- routes
    def _make_app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def record(request: Request, call_next):
            self.requests.append({"method": request.method, "path": request.url.path,
                                  "authorization": request.headers.get("authorization"),
                                  "query": list(request.query_params.multi_items())})
            return await call_next(request)

        @app.post("/api/repos/create")
        async def create_repo(request: Request):
            body = await request.json()
            repo_id = f"{body['organization']}/{body['name']}"
            if repo_id in self.repos:  # the Hub answers 409 with the repo's url, which exist_ok=True returns
                return JSONResponse({"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"},
                                    status_code=409)
            repo = {"private": body.get("visibility") == "private", "type": body.get("type") or "model",
                    "branches": {}, "commits": {}, "downloads": 0, "likes": 0, "created": time.time()}
            repo["branches"]["main"] = self._commit(repo, None, {".gitattributes": GITATTRIBUTES}, "initial commit")
            self.repos[repo_id] = repo
            return {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}

        @app.post("/api/validate-yaml")
        async def validate_yaml():
            return {"errors": [], "warnings": []}

        @app.post("/api/{kind}/{org}/{name}/branch/{branch}")
        async def create_branch(org: str, name: str, branch: str):
            repo, sha, err = self._resolve(f"{org}/{name}", "main")
            if err:
                return err
            if branch in repo["branches"]:
                return _error(409, "BranchExists", f"Branch {branch} already exists")
            repo["branches"][branch] = sha
            return {}

        @app.post("/api/{kind}/{org}/{name}/preupload/{rev}")
        async def preupload(org: str, name: str, rev: str, request: Request):
            _, _, err = self._resolve(f"{org}/{name}", rev)
            if err:
                return err
            files = (await request.json())["files"]
            return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                              for f in files]}

        @app.post("/api/{kind}/{org}/{name}/commit/{rev}")
        async def commit(org: str, name: str, rev: str, request: Request):
            repo_id = f"{org}/{name}"
            repo, parent, err = self._resolve(repo_id, rev)
            if err:
                return err
            lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
            header = next(item["value"] for item in lines if item["key"] == "header")
            files = dict(repo["commits"][parent]["files"])
            for item in lines:
                value = item["value"]
                if item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "deletedFile":
                    files.pop(value["path"], None)
                elif item["key"] != "header":
                    return _error(400, "BadRequest", f"unsupported commit operation {item['key']}")
            sha = self._commit(repo, parent, files, header["summary"])
            repo["branches"][rev] = sha
            repo["modified"] = time.time()
            return {"commitUrl": f"{self.url}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}

        @app.get("/api/{kind}/{org}/{name}/revision/{rev}")
        async def revision_info(org: str, name: str, rev: str):
            repo_id = f"{org}/{name}"
            repo, sha, err = self._resolve(repo_id, rev)
            if err:
                return err
            files = repo["commits"][sha]["files"]
            return {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo["private"],
                    "siblings": [{"rfilename": p} for p in sorted(files)]}

        @app.get("/api/{kind}/{org}/{name}/tree/{rev}")
        async def tree(org: str, name: str, rev: str):
            repo, sha, err = self._resolve(f"{org}/{name}", rev)
            if err:
                return err
            files = repo["commits"][sha]["files"]
            return [{"type": "file", "path": p, "size": len(d), "oid": _blob_oid(d)} for p, d in sorted(files.items())]

        @app.api_route("/{org}/{name}/resolve/{rev}/{path:path}", methods=["GET", "HEAD"])
        async def resolve(org: str, name: str, rev: str, path: str, request: Request):
            repo, sha, err = self._resolve(f"{org}/{name}", rev)
            if err:
                return err
            data = repo["commits"][sha]["files"].get(path)
            if data is None:
                return _error(404, "EntryNotFound", f"{path} does not exist at {rev}")
            if request.method == "GET" and path == "adapter_config.json":  # what the Hub counts for peft repos
                repo["downloads"] += 1
            headers = {"X-Repo-Commit": sha, "ETag": f'"{_blob_oid(data)}"', "Content-Length": str(len(data))}
            return Response(b"" if request.method == "HEAD" else data, headers=headers,
                            media_type="application/octet-stream")

        @app.get("/api/models")
        async def list_models(request: Request):
            q = request.query_params
            authorized = bool(request.headers.get("authorization"))
            rows = [self._model_item(repo_id, repo) for repo_id, repo in self.repos.items()
                    if repo["type"] == "model" and (authorized or not repo["private"])]
            if q.get("search"):
                rows = [r for r in rows if q["search"].lower() in r["id"].lower()]
            if q.get("author"):
                rows = [r for r in rows if r["id"].split("/")[0] == q["author"]]
            for wanted in q.getlist("filter"):  # every filter must match (a tag, or the library)
                rows = [r for r in rows if wanted in r["tags"] or wanted == r.get("library_name")]
            key = {"lastModified": "lastModified", "createdAt": "createdAt", "likes": "likes"}.get(
                q.get("sort"), "downloads")
            rows.sort(key=lambda r: r[key], reverse=q.get("direction", "-1") == "-1")
            if q.get("limit"):
                rows = rows[:int(q["limit"])]
            expand = q.getlist("expand")
            full = q.get("full") in ("True", "true", "1")
            card = q.get("cardData") in ("True", "true", "1")
            out = []
            for row in rows:
                if expand:
                    keep = {"_id", "id", *expand}
                else:
                    keep = {"_id", "id", "likes", "downloads", "tags", "pipeline_tag", "library_name", "createdAt",
                            "private", "lastModified"} | ({"siblings", "sha"} if full else set()) | \
                           ({"cardData"} if card or full else set())
                out.append({k: v for k, v in row.items() if k in keep})
            return out

        return app

    def _model_item(self, repo_id: str, repo: dict) -> dict:
        """A repo as /api/models lists it: tags from the card's front matter on main (its `tags`, the library and
        `base_model:`), as the Hub derives them."""
        sha = repo["branches"]["main"]
        files = repo["commits"][sha]["files"]
        card = {}
        readme = files.get("README.md", b"").decode("utf-8", "replace")
        if readme.startswith("---\n") and "\n---" in readme[4:]:
            card = yaml.safe_load(readme[4:readme.index("\n---", 4)]) or {}
        tags = [str(t) for t in card.get("tags") or []]
        library = card.get("library_name")
        bases = card.get("base_model") or []
        for base in [bases] if isinstance(bases, str) else bases:
            tags += [f"base_model:{base}"] + ([f"base_model:adapter:{base}"] if library == "peft" else [])
        if library:
            tags.insert(0, library)
        stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))  # noqa: E731
        return {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "sha": sha,
                "tags": list(dict.fromkeys(tags)), "library_name": library, "pipeline_tag": card.get("pipeline_tag"),
                "downloads": repo["downloads"], "likes": repo["likes"], "private": repo["private"],
                "createdAt": stamp(repo["created"]), "lastModified": stamp(repo.get("modified", repo["created"])),
                "siblings": [{"rfilename": p} for p in sorted(files)], "cardData": card}

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "FakeHub":
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("fake HF hub did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
