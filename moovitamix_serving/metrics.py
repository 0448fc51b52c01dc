"""The service's Prometheus metrics: requests by route and status, a latency histogram per route,
responses by source, and the version served (its age, loads and refusals)."""

import bisect
import collections
import time
from typing import Callable, Iterable, Optional

PREFIX = "moovitamix_recs"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds; the upper bounds of the latency histogram (Prometheus adds +Inf).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# The label of a request no route matched: one series, whatever the path.
UNMATCHED = "unmatched"


class RequestMetrics:
    """Counters kept by the event loop's thread only, so they need no lock."""

    def __init__(self) -> None:
        self.requests: collections.Counter = collections.Counter()  # (route, status)
        self.sources: collections.Counter = collections.Counter()  # recommendations by source
        self._buckets: dict[str, list[int]] = {}
        self._sums: collections.Counter = collections.Counter()

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        buckets = self._buckets.setdefault(route, [0] * (len(LATENCY_BUCKETS) + 1))
        buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # a bucket counts durations <= its bound
        self._sums[route] += seconds

    def lines(self) -> Iterable[str]:
        yield f"# HELP {PREFIX}_requests_total HTTP requests answered, by route and status."
        yield f"# TYPE {PREFIX}_requests_total counter"
        for (route, status), count in sorted(self.requests.items()):
            yield f'{PREFIX}_requests_total{{route="{_escape(route)}",status="{status}"}} {count}'
        yield f"# HELP {PREFIX}_request_duration_seconds Time from request to the end of the response, by route."
        yield f"# TYPE {PREFIX}_request_duration_seconds histogram"
        for route, buckets in sorted(self._buckets.items()):
            label = f'route="{_escape(route)}"'
            cumulative = 0
            for bound, count in zip([*map(_number, LATENCY_BUCKETS), "+Inf"], buckets):
                cumulative += count
                yield f'{PREFIX}_request_duration_seconds_bucket{{{label},le="{bound}"}} {cumulative}'
            yield f"{PREFIX}_request_duration_seconds_sum{{{label}}} {_number(self._sums[route])}"
            yield f"{PREFIX}_request_duration_seconds_count{{{label}}} {cumulative}"
        yield f"# HELP {PREFIX}_recommendations_total Lists served, by source (model, genre_fallback, popularity_fallback)."
        yield f"# TYPE {PREFIX}_recommendations_total counter"
        for source, count in sorted(self.sources.items()):
            yield f'{PREFIX}_recommendations_total{{source="{source}"}} {count}'


class MetricsMiddleware:
    """Times every HTTP request and counts it by route template (never by raw path) and status.

    Plain ASGI, not Starlette's BaseHTTPMiddleware: it adds microseconds, not a task per request.
    """

    def __init__(self, app: Callable, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            # The route's template when one matched (FastAPI's own pages set none); a 404's path is
            # anything a client sends, so all of them share one series.
            route = getattr(scope.get("route"), "path", None) or (UNMATCHED if status == 404 else scope["path"])
            self.metrics.observe(route, status, time.perf_counter() - started)


def gauge(name: str, help_text: str, value: float, labels: Optional[dict] = None) -> list[str]:
    rendered = ",".join(f'{key}="{_escape(str(item))}"' for key, item in (labels or {}).items())
    return [
        f"# HELP {PREFIX}_{name} {help_text}",
        f"# TYPE {PREFIX}_{name} gauge",
        f"{PREFIX}_{name}{{{rendered}}} {_number(value)}" if rendered else f"{PREFIX}_{name} {_number(value)}",
    ]


def counter(name: str, help_text: str, values: dict) -> list[str]:
    lines = [f"# HELP {PREFIX}_{name} {help_text}", f"# TYPE {PREFIX}_{name} counter"]
    for labels, value in values.items():
        rendered = ",".join(f'{key}="{_escape(str(item))}"' for key, item in labels)
        lines.append(f"{PREFIX}_{name}{{{rendered}}} {_number(value)}")
    return lines


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
