"""Generated token ids → text pieces, ending at the first stop string.

The text is `tokenizer.decode(ids, skip_special_tokens=True)` cut at the earliest stop string — what
`swiftlike.infer.generate` returns — and the streamed pieces add up to exactly that: a piece never ends inside a
multi-byte character or inside what may become a stop string.
"""
from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer = tokenizer
        self.stops = [s for s in dict.fromkeys(stops) if s]
        self.ids: list[int] = []
        self.text = ""  # final text so far (cut at a stop once one is seen)
        self.sent = 0  # characters of `text` already handed out
        self.stopped = False

    def add(self, token: int) -> str:
        """The new piece that can be sent after `token` (maybe empty); sets `stopped` at a stop string."""
        if self.stopped:
            return ""
        self.ids.append(token)
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = min((i for i in (full.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = full[:cut], True
            return self.flush()
        self.text = full
        safe = len(full)
        while safe > self.sent and full[safe - 1] == "\ufffd":  # an incomplete UTF-8 sequence so far
            safe -= 1
        for stop in self.stops:  # hold back a tail that may be the start of a stop string
            for k in range(min(len(stop) - 1, safe - self.sent), 0, -1):
                if full.endswith(stop[:k], 0, safe):
                    safe -= k
                    break
        piece = full[self.sent:safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return piece

    def flush(self) -> str:
        """Everything not sent yet (at the end of generation)."""
        piece = self.text[self.sent:]
        self.sent = len(self.text)
        return piece
