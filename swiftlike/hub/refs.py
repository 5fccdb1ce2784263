"""Hub references: `HUB:ORG/NAME[@REV]` (hf:, ms:, local: or any registered hub), parsed in this one place."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..registry import SwiftlikeError

# fullmatch and ASCII: `$` would accept a trailing newline and \w any Unicode letter
_REF = re.compile(r"(?P<hub>[a-z][a-z0-9_-]*):(?P<org>[A-Za-z0-9][\w.-]{0,95})/(?P<name>[A-Za-z0-9][\w.-]{0,95})"
                  r"(?:@(?P<rev>[\w.\-/]{1,255}))?", re.ASCII)


@dataclass(frozen=True)
class HubRef:
    hub: str
    repo_id: str  # ORG/NAME
    revision: str | None = None  # branch, tag or commit; None = the hub's default branch

    @property
    def name(self) -> str:
        return self.repo_id.split("/", 1)[1]

    def __str__(self) -> str:
        return f"{self.hub}:{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    def at(self, revision: str | None) -> "HubRef":
        return HubRef(self.hub, self.repo_id, revision)


def looks_like_ref(text: str) -> bool:
    """HUB:... where HUB is a plain word: tells a reference from a path (C:\\ and ./a:b are paths)."""
    return bool(re.match(r"^[a-z][a-z0-9_-]*:[^\\/]", str(text)))


def parse_ref(text: str) -> HubRef:
    """'hf:org/name@v1' -> HubRef('hf', 'org/name', 'v1'); a malformed reference is a one-line error."""
    m = _REF.fullmatch(str(text).strip())
    if not m:
        raise SwiftlikeError(f"{text!r} is not a hub reference; write HUB:ORG/NAME[@REVISION], e.g. "
                             f"hf:acme/nova-lora, ms:acme/nova-lora@master, local:team/nova-lora@v1")
    rev = m["rev"]
    if rev and (".." in rev.split("/") or rev.startswith("/")):
        raise SwiftlikeError(f"{text!r}: revision {rev!r} is not a branch, tag or commit name")
    return HubRef(m["hub"], f"{m['org']}/{m['name']}", rev)
