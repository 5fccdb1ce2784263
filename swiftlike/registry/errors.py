"""Errors users see as one line (the CLI prints str(err) and exits non-zero)."""
import difflib


class SwiftlikeError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class UnknownNameError(SwiftlikeError, KeyError):
    def __init__(self, kind: str, name: str, known):
        self.kind, self.name = kind, name
        self.suggestions = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        singular = kind[:-1] if kind.endswith("s") else kind
        command = {"adapters": "adapter list", "plugins": "plugin available"}.get(kind, f"{kind} list")
        super().__init__(f"unknown {singular} {name!r}{hint} (see `swiftlike {command}`)")

    def __str__(self):  # KeyError would quote the message
        return self.args[0]


class ConflictError(SwiftlikeError):
    pass
