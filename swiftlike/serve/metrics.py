"""Prometheus text exposition (format 0.0.4) without a client library: counters, one histogram, gauges read live.
Adapter names are never labels: /metrics must not list one tenant's adapters to another."""
from __future__ import annotations

import bisect
import collections
import threading

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Histogram:
    def __init__(self, buckets=LATENCY_BUCKETS):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, running = [], 0
        sep = "," if labels else ""
        for bound, n in zip(self.buckets + (float("inf"),), self.counts):
            running += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        wrap = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{wrap} {self.sum}", f"{name}_count{wrap} {self.count}"]
        return out


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = collections.Counter()  # (endpoint, status) -> n
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.latency = collections.defaultdict(Histogram)  # endpoint -> request latency
        self.ttft = Histogram()

    def request(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.requests[(endpoint, str(status))] += 1

    def done(self, endpoint: str, seconds: float, prompt: int, completion: int) -> None:
        """A completed generation."""
        with self.lock:
            self.latency[endpoint].observe(seconds)
            self.prompt_tokens += prompt
            self.completion_tokens += completion

    def first_token(self, seconds: float) -> None:
        with self.lock:
            self.ttft.observe(seconds)

    def render(self, gauges: dict, counters: dict) -> str:
        """gauges/counters: {name: (help, value)} read at scrape time (pool and engine state)."""
        with self.lock:
            lines = ["# HELP swiftlike_requests_total HTTP requests by endpoint and status code.",
                     "# TYPE swiftlike_requests_total counter"]
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'swiftlike_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
            lines += ["# HELP swiftlike_prompt_tokens_total Prompt tokens of completed requests.",
                      "# TYPE swiftlike_prompt_tokens_total counter",
                      f"swiftlike_prompt_tokens_total {self.prompt_tokens}",
                      "# HELP swiftlike_completion_tokens_total Generated tokens of completed requests.",
                      "# TYPE swiftlike_completion_tokens_total counter",
                      f"swiftlike_completion_tokens_total {self.completion_tokens}",
                      "# HELP swiftlike_request_latency_seconds Time from request to last token.",
                      "# TYPE swiftlike_request_latency_seconds histogram"]
            for endpoint in sorted(self.latency):
                lines += self.latency[endpoint].lines("swiftlike_request_latency_seconds",
                                                      f'endpoint="{endpoint}"')
            lines += ["# HELP swiftlike_time_to_first_token_seconds Time from request to first token.",
                      "# TYPE swiftlike_time_to_first_token_seconds histogram"]
            lines += self.ttft.lines("swiftlike_time_to_first_token_seconds")
        for kind, table in (("counter", counters), ("gauge", gauges)):
            for name, (help_, value) in table.items():
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"
