"""Transport faults: latency, 5xx, 429, dropped connections and broken bodies.

Every decision is a pure function of (fault seed, path, page, size, attempt), where
attempt counts the requests for that exact (path, page, size) since the settings last
changed. A run is therefore reproducible, and since each attempt draws anew, a retry of
a failing page eventually succeeds whenever the rates sum to less than 1.
"""

import asyncio
import dataclasses
import json
from typing import Any, Callable, Optional
from urllib.parse import parse_qs

from moovitamix_api.data import hash64, unit
from moovitamix_api.settings import ENTITIES, EmulatorSettings

DATA_PATHS = {f"/{entity}": code for code, entity in enumerate(ENTITIES, start=1)}
ERROR_STATUSES = (500, 502, 503)
NONE, DROP, ERROR, RATE_LIMIT, BAD_JSON = "none", "drop", "error", "rate_limit", "bad_json"
_F_KIND, _F_LATENCY, _F_VARIANT = 101, 102, 103


@dataclasses.dataclass(frozen=True)
class TransportFault:
    kind: str  # one of NONE, DROP, ERROR, RATE_LIMIT, BAD_JSON
    latency_ms: float
    variant: int  # picks the status of an ERROR or the shape of a BAD_JSON body


def has_transport_faults(settings: EmulatorSettings) -> bool:
    return bool(
        settings.latency_ms
        or settings.error_rate
        or settings.rate_limit_rate
        or settings.drop_rate
        or settings.bad_json_rate
    )


def decide(settings: EmulatorSettings, path: str, page: int, size: int, attempt: int) -> TransportFault:
    """The fault of the `attempt`-th (1-based) request for `path?page=&size=`.

    One uniform draw u per request: u < drop_rate -> DROP; then the next error_rate of
    the unit interval -> ERROR; then rate_limit_rate -> RATE_LIMIT; then bad_json_rate ->
    BAD_JSON; otherwise NONE. Latency is latency_ms * (0.5 + another uniform draw).
    """
    keys = (settings.effective_fault_seed, 0x7FA1, DATA_PATHS.get(path, 0), page, size, attempt)
    u = float(unit(*keys, _F_KIND))
    kind = NONE
    threshold = 0.0
    for rate, name in (
        (settings.drop_rate, DROP),
        (settings.error_rate, ERROR),
        (settings.rate_limit_rate, RATE_LIMIT),
        (settings.bad_json_rate, BAD_JSON),
    ):
        threshold += rate
        if u < threshold:
            kind = name
            break
    latency = settings.latency_ms * (0.5 + float(unit(*keys, _F_LATENCY))) if settings.latency_ms else 0.0
    return TransportFault(kind, latency, int(hash64(*keys, _F_VARIANT) % 1024))


class TransportFaultMiddleware:
    """Raw ASGI middleware applying `decide` to requests of the data endpoints."""

    def __init__(self, app: Any, settings: Callable[[], EmulatorSettings], next_attempt: Callable[[tuple], int]):
        self.app = app
        self.settings = settings
        self.next_attempt = next_attempt

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        settings = self.settings()
        if scope["type"] != "http" or scope["path"] not in DATA_PATHS or not has_transport_faults(settings):
            return await self.app(scope, receive, send)
        page, size = _page_and_size(scope.get("query_string", b""))
        if page is None:  # not a valid query: let validation answer 422
            return await self.app(scope, receive, send)
        attempt = self.next_attempt((scope["path"], page, size))
        fault = decide(settings, scope["path"], page, size, attempt)
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.kind == DROP:
            return await _drop_connection(receive)
        if fault.kind == ERROR:
            status = ERROR_STATUSES[fault.variant % len(ERROR_STATUSES)]
            return await _send(send, status, {"detail": f"emulated upstream failure ({status})"})
        if fault.kind == RATE_LIMIT:
            headers = [(b"retry-after", str(settings.retry_after).encode())]
            return await _send(send, 429, {"detail": "Too Many Requests"}, headers)
        if fault.kind == BAD_JSON:
            return await self._send_broken_body(scope, receive, send, fault.variant)
        return await self.app(scope, receive, send)

    async def _send_broken_body(self, scope: dict, receive: Callable, send: Callable, variant: int) -> None:
        """200 with either the real page cut in half or an HTML error page."""
        if variant % 2:
            body, content_type = b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"text/html"
        else:
            chunks = []

            async def capture(message: dict) -> None:
                if message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))

            await self.app(scope, receive, capture)
            full = b"".join(chunks)
            body, content_type = full[: max(1, len(full) // 2)], b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _page_and_size(query_string: bytes) -> "tuple[Optional[int], Optional[int]]":
    query = parse_qs(query_string.decode("latin-1"))
    try:
        page = int(query.get("page", ["1"])[-1])
        size = int(query.get("size", ["100"])[-1])
    except ValueError:
        return None, None
    if page < 1 or not 1 <= size <= 100:
        return None, None
    return page, size


async def _send(send: Callable, status: int, payload: dict, headers: Optional[list] = None) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _drop_connection(receive: Callable) -> None:
    """Close the client's connection without a byte of response.

    ASGI has no message for this, and a server answers 500 to an app that raises, so this
    reaches uvicorn's transport through the request cycle that owns `receive`.
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:  # not uvicorn (e.g. an in-process test client)
        raise ConnectionAbortedError("emulated dropped connection")
    transport.close()
    for _ in range(100):  # let connection_lost mark the cycle disconnected
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0)
