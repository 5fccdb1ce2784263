"""ModelScope through the modelscope client (default branch `master`).

modelscope has no offline switch of its own: with MODELSCOPE_OFFLINE=1 or SWIFTLIKE_OFFLINE=1
downloads come from its cache only (`$MODELSCOPE_CACHE/models/ORG--NAME/snapshots/REVISION/`) and never touch the
network.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..registry import SwiftlikeError


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


def offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("MODELSCOPE_OFFLINE", "SWIFTLIKE_OFFLINE"))
