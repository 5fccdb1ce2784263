"""The Hugging Face Hub through huggingface_hub (token, cache and HF_HUB_OFFLINE handled by the library)."""
from __future__ import annotations

from pathlib import Path

from ..registry import SwiftlikeError
from . import tag_value


class HFHub:
    name = "hf"
    default_revision = "main"

    def download(self, repo_id, *, repo_type="model", revision=None, cache_dir=None, allow_patterns=None) -> Path:
        import huggingface_hub
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

        try:
            return Path(huggingface_hub.snapshot_download(
                repo_id, repo_type=repo_type, revision=revision, cache_dir=cache_dir, allow_patterns=allow_patterns))
        except RevisionNotFoundError:
            raise SwiftlikeError(f"hf:{repo_id}@{revision}: no such branch, tag or commit on the Hub") from None
        except RepositoryNotFoundError:  # the Hub answers 404 for private repos too
            raise SwiftlikeError(f"hf:{repo_id}: not found on the Hugging Face Hub (a private repo needs `hf auth "
                                 f"login` or HF_TOKEN)") from None
        except LocalEntryNotFoundError:
            # Offline (HF_HUB_OFFLINE=1 or no network) and nothing cached: say which and what to do.
            raise SwiftlikeError(
                f"hf:{repo_id}{'@' + revision if revision else ''} is not in the Hugging Face cache and the hub "
                f"cannot be reached; download it on a connected machine (huggingface-cli download {repo_id}) "
                f"or pass --model DIR") from None

    def listing(self, repo_id, *, revision=None, repo_type="model") -> tuple[str, dict] | None:
        """(commit, {path: size}) of `revision` as the Hub states it, before anything is downloaded: an install
        compares the sizes with the manifest first. None when the Hub cannot be asked (offline, no network, an
        HTTP error): the download then answers from the cache, as huggingface_hub does."""
        from huggingface_hub import HfApi, constants
        from huggingface_hub.errors import RevisionNotFoundError
        from huggingface_hub.hf_api import RepoFile

        if constants.HF_HUB_OFFLINE:
            return None
        api = HfApi()
        try:
            commit = api.repo_info(repo_id, revision=revision or self.default_revision, repo_type=repo_type).sha
            sizes = {f.path: f.size for f in api.list_repo_tree(repo_id, revision=commit, recursive=True,
                                                                 repo_type=repo_type) if isinstance(f, RepoFile)}
        except RevisionNotFoundError:
            raise SwiftlikeError(f"hf:{repo_id}@{revision or self.default_revision}: no such branch, tag or commit "
                                 f"on the Hub") from None
        except Exception:  # unreachable or failing Hub: the download falls back to the cache, as huggingface_hub does
            return None
        return (commit, sizes) if commit else None

    def upload(self, folder, repo_id, *, revision=None, private=False, message=None, repo_type="model") -> str:
        """create_repo(exist_ok) + upload_folder; the token comes from HF_TOKEN or `hf auth login` (never printed)."""
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        ref = f"hf:{repo_id}" + (f"@{revision}" if revision else "")
        api = HfApi()
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
            if private and not api.repo_info(repo_id, revision=self.default_revision, repo_type=repo_type).private:
                # create_repo(exist_ok) leaves an existing public repo public: say so instead of pushing there
                raise SwiftlikeError(f"cannot push to {ref} with --private: the repo exists and is public; make it "
                                     f"private on the Hub (Settings) first, or push without --private")
            if revision and revision != self.default_revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type=repo_type)
            info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                     repo_type=repo_type, commit_message=message or f"Upload {repo_id} with swiftlike")
        except OfflineModeIsEnabled:
            raise SwiftlikeError(f"cannot push to {ref}: HF_HUB_OFFLINE=1 is set; unset it to push") from None
        except HfHubHTTPError as err:
            status = getattr(err.response, "status_code", None)
            if status in (401, 403):
                raise SwiftlikeError(f"cannot push to {ref}: HTTP {status}, not authorized; log in with `hf auth "
                                     f"login` or set HF_TOKEN to a token with write access") from None
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SwiftlikeError(f"cannot push to {ref}: {detail}") from None
        return info.oid

    def search(self, query=None, *, base_model_type=None, tuner=None, limit=20) -> list[dict]:
        """Adapters pushed with swiftlike: one `list_models` request (library peft, tag swiftlike, and the
        swiftlike-base:/swiftlike-tuner: tags the card puts there), most downloaded first. Rank comes from the
        card's `swiftlike:` block, returned in the same request; only a hit whose card lacks it costs a fetch of its
        small swiftlike.json. Rows: ref, base_model_type, tuner, rank, downloads, likes, updated, files."""
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        filters = ["peft", "swiftlike"] + ([f"swiftlike-base:{base_model_type}"] if base_model_type else []) + \
            ([f"swiftlike-tuner:{tuner}"] if tuner else [])
        try:
            models = list(HfApi().list_models(
                search=query or None, filter=filters, sort="downloads", limit=limit,
                expand=["downloads", "likes", "lastModified", "tags", "siblings", "cardData"]))
        except OfflineModeIsEnabled:
            raise SwiftlikeError("offline (HF_HUB_OFFLINE=1 is set)") from None
        except HfHubHTTPError as err:
            status = getattr(err.response, "status_code", None)
            raise SwiftlikeError(f"answered HTTP {status} ({_first_line(err)})") from None
        rows = []
        for m in models:
            tags = m.tags or []
            meta = (m.card_data.to_dict() if m.card_data else {}).get("swiftlike")
            meta = meta if isinstance(meta, dict) else {}
            row = {"ref": f"hf:{m.id}",
                   "base_model_type": meta.get("base_model_type") or tag_value(tags, "swiftlike-base:"),
                   "tuner": meta.get("tuner") or tag_value(tags, "swiftlike-tuner:"), "rank": meta.get("rank"),
                   "downloads": m.downloads, "likes": m.likes,
                   "updated": m.last_modified.strftime("%Y-%m-%dT%H:%M:%SZ") if m.last_modified else None,
                   "files": [s.rfilename for s in m.siblings] if m.siblings is not None else None}
            if row["rank"] is None:
                row.update(_manifest_fields(m.id))
            rows.append(row)
        return rows

    @staticmethod
    def storage_root(snapshot: Path) -> Path:
        """Snapshot files are symlinks into ../../blobs: the repo cache dir is what they may point into."""
        return Path(snapshot).resolve().parent.parent


def _manifest_fields(repo_id: str) -> dict:
    """base_model_type, tuner and rank from a repo's swiftlike.json ({} when it cannot be read: a search row then
    shows less, it does not fail)."""
    from huggingface_hub import hf_hub_download

    from ..checkpoint import MANIFEST, check_manifest_fields, parse_manifest, read_manifest_bytes

    try:
        manifest = parse_manifest(read_manifest_bytes(hf_hub_download(repo_id, MANIFEST)), MANIFEST)
        check_manifest_fields(manifest, f"hf:{repo_id}/{MANIFEST}")
    except Exception:
        return {}
    cfg = manifest.get("tuner_config") or {}
    return {k: v for k, v in {"base_model_type": manifest.get("base_model_type"), "tuner": manifest.get("tuner"),
                              "rank": cfg.get("r")}.items() if v is not None}


def _first_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
