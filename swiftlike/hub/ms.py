"""ModelScope through the modelscope client (default branch `master`).

modelscope has no offline switch of its own: with MODELSCOPE_OFFLINE=1 or SWIFTLIKE_OFFLINE=1
downloads come from its cache only (`$MODELSCOPE_CACHE/models/ORG--NAME/snapshots/REVISION/`) and never touch the
network.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..registry import SwiftlikeError
from . import tag_value


class MSHub:
    name = "ms"
    default_revision = "master"

    def download(self, repo_id, *, repo_type="model", revision=None, cache_dir=None, allow_patterns=None) -> Path:
        try:
            if repo_type == "dataset":
                from modelscope.hub.snapshot_download import dataset_snapshot_download as download
                extra = {}
            else:
                from modelscope.hub.snapshot_download import snapshot_download as download
                extra = {"local_files_only": True} if offline() else {}
            return Path(download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=allow_patterns,
                                 **extra))
        except SwiftlikeError:
            raise
        except Exception as err:  # modelscope raises plain errors for both 404 and no network
            raise SwiftlikeError(
                f"ms:{repo_id}{'@' + revision if revision else ''} could not be downloaded from ModelScope and is "
                f"not cached ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                f"pass --model DIR or try --hub hf") from None

    def upload(self, folder, repo_id, *, revision=None, private=False, message=None, repo_type="model") -> str:
        """HubApi.create_repo(exist_ok) + upload_folder onto `master` (or `revision`); token from
        MODELSCOPE_API_TOKEN or `modelscope login`."""
        from modelscope.hub.api import HubApi

        branch = revision or self.default_revision
        ref = f"ms:{repo_id}@{branch}"
        token = os.environ.get("MODELSCOPE_API_TOKEN") or None
        try:
            api = HubApi(token=token)
            api.create_repo(repo_id, visibility="private" if private else "public", repo_type=repo_type,
                            exist_ok=True)
            result = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                       revision=branch, commit_message=message or f"Upload {repo_id} with swiftlike")
        except SwiftlikeError:
            raise
        except Exception as err:  # modelscope raises plain errors for auth, 404 and no network alike
            detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise SwiftlikeError(f"cannot push to {ref}: {type(err).__name__}: {detail} (log in with `modelscope "
                                 f"login` or set MODELSCOPE_API_TOKEN)") from None
        commit = result[-1] if isinstance(result, list) and result else result
        if isinstance(commit, dict):
            for key in ("commit_id", "CommitId", "oid", "sha"):
                if commit.get(key):
                    return str(commit[key])
        return branch

    def search(self, query=None, *, base_model_type=None, tuner=None, limit=20) -> list[dict]:
        """Models tagged `swiftlike` on ModelScope through its OpenAPI client (modelscope_hub, which
        modelscope.hub.api.HubApi wraps; it imports in a second where modelscope takes several), most downloaded
        first. Base model type and tuner come from the swiftlike-base:/swiftlike-tuner: tags; ModelScope's listing
        has no file list or card data, so rank and signature are left unknown (`adapter info` reads them)."""
        if offline():
            raise SwiftlikeError("offline (MODELSCOPE_OFFLINE/SWIFTLIKE_OFFLINE is set)")
        try:
            from modelscope_hub import HubApi
        except ImportError:
            raise SwiftlikeError("the modelscope client is not installed (pip install modelscope)") from None
        try:
            page = HubApi(token=os.environ.get("MODELSCOPE_API_TOKEN") or None).list_repos(
                "model", search=query or None, sort="downloads", page_size=min(int(limit), 50), custom_tag="swiftlike")
        except Exception as err:  # modelscope_hub raises NetworkError (a ConnectionError) when it cannot connect
            detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            if isinstance(err, (ConnectionError, TimeoutError)):
                raise SwiftlikeError(f"cannot be reached ({type(err).__name__}: {detail})") from None
            raise SwiftlikeError(f"search failed ({type(err).__name__}: {detail})") from None
        rows = []
        for info in page.items:
            tags = [str(t) for t in info.tags or []]
            row = {"ref": f"ms:{info.owner}/{info.name}", "base_model_type": tag_value(tags, "swiftlike-base:"),
                   "tuner": tag_value(tags, "swiftlike-tuner:"), "rank": None, "downloads": info.downloads,
                   "likes": info.likes, "updated": _iso(info.last_modified), "files": None}
            if (base_model_type and row["base_model_type"] != base_model_type) or (tuner and row["tuner"] != tuner):
                continue
            rows.append(row)
        return rows[:limit]


def _iso(value) -> str | None:
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value) if value else None


def offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("MODELSCOPE_OFFLINE", "SWIFTLIKE_OFFLINE"))
