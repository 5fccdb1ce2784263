"""The Hugging Face Hub through huggingface_hub (token, cache and HF_HUB_OFFLINE handled by the library)."""
from __future__ import annotations

from pathlib import Path

from ..registry import SwiftlikeError


class HFHub:
    name = "hf"
    default_revision = "main"

    def download(self, repo_id, *, repo_type="model", revision=None, cache_dir=None, allow_patterns=None) -> Path:
        import huggingface_hub
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(huggingface_hub.snapshot_download(
                repo_id, repo_type=repo_type, revision=revision, cache_dir=cache_dir, allow_patterns=allow_patterns))
        except LocalEntryNotFoundError:
            # Offline (HF_HUB_OFFLINE=1 or no network) and nothing cached: say which and what to do.
            raise SwiftlikeError(
                f"hf:{repo_id}{'@' + revision if revision else ''} is not in the Hugging Face cache and the hub "
                f"cannot be reached; download it on a connected machine (huggingface-cli download {repo_id}) "
                f"or pass --model DIR") from None
