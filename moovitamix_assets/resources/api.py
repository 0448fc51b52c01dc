"""The Moovitamix API client: every page of an endpoint, in order, despite a flaky upstream.

Transport retries (5xx, 429 with Retry-After, dropped connections, read errors) are
urllib3's, on the session's adapter. What urllib3 cannot see, a 200 whose body is not a
page, is retried here. Pages after the first are fetched concurrently, but yielded in
order through a bounded window, so memory stays flat at any scale.
"""

import collections
import dataclasses
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Deque, Dict, Iterator, List, Optional

import dagster as dg
import orjson
import requests
from pydantic import Field, PrivateAttr
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRIED_STATUSES = (429, 500, 502, 503, 504)


class _CappedRetry(Retry):
    """urllib3's Retry, with a Retry-After wait capped at backoff_max like any backoff."""

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.backoff_max)


class MoovitamixApiError(Exception):
    """A page could not be fetched: names the endpoint, the page and the cause."""


@dataclasses.dataclass(frozen=True)
class Page:
    number: int
    items: List[Dict[str, Any]]
    total: int
    pages: int
    raw: bytes = dataclasses.field(default=b"", repr=False)  # the body as received


@dataclasses.dataclass
class FetchStats:
    """Figures of one pull of an endpoint, updated as pages arrive."""

    endpoint: str
    pages: int = 0  # pages yielded
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0  # requests beyond the first of each page
    records: int = 0  # items yielded
    bytes: int = 0  # response bytes received
    seconds: float = 0.0  # since the pull started

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def as_metadata(self) -> Dict[str, float]:
        return {
            "pages": self.pages,
            "requests": self.requests,
            "retries": self.retries,
            "records": self.records,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 1),
        }


class PagedFetch:
    """Iterable over every page of one endpoint, in order; `stats` fills in as it goes."""

    def __init__(self, client: "MoovitamixApiClient", endpoint: str):
        self.client = client
        self.endpoint = endpoint
        self.stats = FetchStats(endpoint=endpoint)
        self._lock = threading.Lock()
        self._started: Optional[float] = None

    def __iter__(self) -> Iterator[Page]:
        if self._started is not None:
            raise RuntimeError(f"the pull of /{self.endpoint} was already iterated; start a new one")
        self._started = time.monotonic()
        return self._pages()

    def _pages(self) -> Iterator[Page]:
        first = self._fetch(1)
        last_number = max(first.pages, 1)
        window_size = 2 * self.client.max_concurrency
        pool = ThreadPoolExecutor(self.client.max_concurrency, thread_name_prefix=f"moovitamix-{self.endpoint}")
        window: Deque["Future[Page]"] = collections.deque()
        next_number = 2
        try:
            while next_number <= last_number and len(window) < window_size:
                window.append(pool.submit(self._fetch, next_number))
                next_number += 1
            yield self._count(first)
            while window:
                page = window.popleft().result()
                if next_number <= last_number:
                    window.append(pool.submit(self._fetch, next_number))
                    next_number += 1
                yield self._count(page)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _fetch(self, number: int) -> Page:
        return self.client.fetch_page(self.endpoint, number, on_response=self._record_request)

    def _record_request(self, requests_sent: int, retries: int, size: int) -> None:
        with self._lock:
            self.stats.requests += requests_sent
            self.stats.retries += retries
            self.stats.bytes += size
            self.stats.seconds = time.monotonic() - self._started

    def _count(self, page: Page) -> Page:
        with self._lock:
            self.stats.pages += 1
            self.stats.records += len(page.items)
            self.stats.seconds = time.monotonic() - self._started
        return page


class MoovitamixApiClient:
    """A keep-alive session to the API; `fetch_all_pages` is all the ingestion needs."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        page_size: int = 100,
        max_concurrency: int = 4,
        timeout_seconds: float = 30.0,
        max_retries: int = 8,
        backoff_factor: float = 0.25,
        backoff_max_seconds: float = 30.0,
        api_token: Optional[str] = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size
        self.max_concurrency = max(1, max_concurrency)
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_factor = backoff_factor
        self.backoff_max_seconds = backoff_max_seconds
        self.session = requests.Session()
        retry = _CappedRetry(
            total=max_retries,
            status_forcelist=RETRIED_STATUSES,
            allowed_methods=frozenset({"GET"}),
            backoff_factor=backoff_factor,
            backoff_max=backoff_max_seconds,
            respect_retry_after_header=True,
            raise_on_status=False,  # the last response comes back; we name its status
        )
        # Room for the three endpoints pulled at once, each with its own max_concurrency pages in flight.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=3 * self.max_concurrency, max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._token = api_token
        if api_token:
            self.session.headers["Authorization"] = f"Bearer {api_token}"

    def _redact(self, text: str) -> str:
        """Upstream text as it may go into an error: the token masked, should a proxy echo it."""
        return text.replace(self._token, "***") if self._token else text

    def __repr__(self) -> str:  # never shows the token
        return f"MoovitamixApiClient(base_url={self.base_url!r}, page_size={self.page_size})"

    def __enter__(self) -> "MoovitamixApiClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def fetch_all_pages(self, endpoint: str) -> PagedFetch:
        """Every page of GET /{endpoint}, in order (lazily: requests start on iteration)."""
        return PagedFetch(self, endpoint.strip("/"))

    def fetch_page(self, endpoint: str, number: int, on_response: Any = None) -> Page:
        """GET /{endpoint}?page=number, retried until it returns a valid page or retries run out.

        on_response(requests_sent, retries, bytes) is called after each HTTP exchange.
        """
        where = f"GET /{endpoint} page {number}"
        report = on_response or (lambda *counts: None)
        problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                report(0, 1, 0)  # an application-level retry
                time.sleep(min(self.backoff_max_seconds, self.backoff_factor * 2 ** (attempt - 1)))
            try:
                response = self.session.get(
                    f"{self.base_url}/{endpoint}",
                    params={"page": number, "size": self.page_size},
                    timeout=self.timeout_seconds,
                )
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as error:
                report(1, 0, 0)
                problem = f"broken response body ({type(error).__name__})"
                continue
            except requests.RequestException as error:  # urllib3 ran out of retries
                report(1 + self.max_retries, self.max_retries, 0)
                raise MoovitamixApiError(
                    f"{where}: {_describe(error)} after {self.max_retries} retries"
                ) from None
            transport_retries = len(response.raw.retries.history) if response.raw.retries else 0
            report(1 + transport_retries, transport_retries, len(response.content))
            if response.status_code != 200:
                retried = f" after {transport_retries} retries" if response.status_code in RETRIED_STATUSES else ""
                raise MoovitamixApiError(
                    f"{where}: HTTP {response.status_code}{retried}: {self._redact(response.text)[:200]}"
                )
            try:
                body = decode_json(response)
            except ValueError as error:
                problem = f"body is not JSON ({error}; starts {self._redact(response.text)[:40]!r})"
                continue
            try:
                return parse_page(body, number, raw=response.content)
            except ValueError as error:
                problem = str(error)
        raise MoovitamixApiError(f"{where}: {problem} after {self.max_retries} retries")


def decode_json(response: requests.Response) -> Any:
    """The body as JSON: orjson (several times faster than json, which matters at a million
    records a day), or the standard library's json for what orjson refuses but JSON allows
    (a lone UTF-16 surrogate escape, "\\ud83c"); ValueError when it is not JSON at all."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return json.loads(response.text)


def parse_page(body: Any, number: int, raw: bytes = b"") -> Page:
    """A page body -> Page; ValueError naming what is wrong when it is not a page."""
    if not isinstance(body, dict):
        raise ValueError(f"body is not a JSON object but {type(body).__name__}")
    items, total, pages = body.get("items"), body.get("total"), body.get("pages")
    if not isinstance(items, list):
        raise ValueError("body has no 'items' list")
    for key, value in (("total", total), ("pages", pages)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"body has no integer {key!r}")
    return Page(number=number, items=items, total=total, pages=pages, raw=raw)


def _describe(error: requests.RequestException) -> str:
    reason = error.args[0] if error.args else error
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return f"{type(error).__name__} ({reason})"


class MoovitamixApiResource(dg.ConfigurableResource):
    """The Moovitamix app's HTTP API (the real service or the project's emulator)."""

    base_url: str = "http://127.0.0.1:8000"
    page_size: int = 100
    max_concurrency: int = 4
    timeout_seconds: float = 30.0
    max_retries: int = 8
    backoff_factor: float = 0.25
    backoff_max_seconds: float = 30
    api_token: Optional[str] = Field(default=None, repr=False, description="sent as a Bearer token")

    _client: Optional[MoovitamixApiClient] = PrivateAttr(default=None)

    def get_client(self) -> MoovitamixApiClient:
        if self._client is None:
            self._client = MoovitamixApiClient(
                base_url=self.base_url,
                page_size=self.page_size,
                max_concurrency=self.max_concurrency,
                timeout_seconds=self.timeout_seconds,
                max_retries=self.max_retries,
                backoff_factor=self.backoff_factor,
                backoff_max_seconds=self.backoff_max_seconds,
                api_token=self.api_token,
            )
        return self._client

    def fetch_all_pages(self, endpoint: str) -> PagedFetch:
        """Every page of GET /{endpoint}, in order; see PagedFetch.stats for the figures."""
        return self.get_client().fetch_all_pages(endpoint)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
