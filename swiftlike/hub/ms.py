"""ModelScope through the modelscope client (default branch `master`)."""
from __future__ import annotations

from pathlib import Path

from ..registry import SwiftlikeError


class MSHub:
    name = "ms"
    default_revision = "master"

    def download(self, repo_id, *, repo_type="model", revision=None, cache_dir=None, allow_patterns=None) -> Path:
        try:
            if repo_type == "dataset":
                from modelscope.hub.snapshot_download import dataset_snapshot_download as download
            else:
                from modelscope.hub.snapshot_download import snapshot_download as download
            return Path(download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=allow_patterns))
        except SwiftlikeError:
            raise
        except Exception as err:  # modelscope raises plain errors for both 404 and no network
            raise SwiftlikeError(
                f"ms:{repo_id}{'@' + revision if revision else ''} could not be downloaded from ModelScope and is "
                f"not cached ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                f"pass --model DIR or try --hub hf") from None
