"""Row problems and the one error that lists them."""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import SwiftlikeError

MAX_LISTED = 10


@dataclass(frozen=True)
class Problem:
    """One bad row: `location` is `file:line` (JSONL, CSV) or `file[#i]` (JSON array, generated rows)."""
    location: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


class DatasetError(SwiftlikeError):
    """The data cannot be used as is; `problems` holds every bad row found."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        self.problems = list(problems or [])
        super().__init__(message)

    @classmethod
    def from_problems(cls, problems: list[Problem], hint: str = "fix them or pass --skip_bad_rows true"
                      ) -> "DatasetError":
        listed = "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        return cls(f"{len(problems)} bad row(s) in the dataset; {hint}:\n{listed}{more}", problems)
