"""The Moovitamix API client: every page of an endpoint, in order, despite a flaky upstream.

Transport retries (5xx, 429 with Retry-After, dropped connections, read errors) are
urllib3's, on the session's adapter. What urllib3 cannot see, a 200 whose body is not a
page, is retried here. Pages after the first are fetched concurrently, but yielded in
order through a bounded window, so memory stays flat at any scale.

It says what it does: each pull logs its progress at INFO every few seconds, and each
retry at WARNING with its cause and wait (a few lines per window, the rest summed up, so
a flaky day stays readable). An API that has not answered once fails fast: the endpoints
share one `Reachability`, which gives up after a short budget when no request has ever
been answered and then fails every request at once with the same cause. A transient storm
of 5xx or 429 is an answer, and keeps the full retry budget.
"""

import collections
import dataclasses
import json
import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Deque, Dict, Iterator, List, Optional

import dagster as dg
import orjson
import requests
from pydantic import Field, PrivateAttr
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

RETRIED_STATUSES = (429, 500, 502, 503, 504)

# A Dagster logger: inside a step, its lines are the step's (from any thread), in the UI
# and the run's event log; elsewhere, plain Python logging.
LOG = dg.get_dagster_logger("moovitamix_api")


class _OwnRetriesLogged(logging.Filter):
    """urllib3 logs each of our retries too ("Retrying (_CappedRetry(...)) after ..."), without
    a rate limit: RetryLog says the same, readably, so those lines are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Retrying (") and "_CappedRetry(" in record.getMessage())


logging.getLogger("urllib3.connectionpool").addFilter(_OwnRetriesLogged())

# Seconds between two progress lines of one pull.
PROGRESS_SECONDS = 5.0
# Retries logged one by one per window; past that, counted by cause and summed up once.
RETRY_LINES_PER_WINDOW = 5
RETRY_WINDOW_SECONDS = 10.0
# Before the API has answered once: how long to wait for a connection, for a first answer,
# and how long to keep trying before declaring it unreachable.
CONNECT_TIMEOUT_SECONDS = 5.0
FIRST_ANSWER_TIMEOUT_SECONDS = 10.0
UNREACHABLE_AFTER_SECONDS = 10.0


class MoovitamixApiError(Exception):
    """A page could not be fetched: names the endpoint, the page and the cause.

    transient is False for an answer that asking again will not change (a 4xx other than
    429: a wrong token, a missing route, a refused parameter).
    """

    def __init__(self, message: str, transient: bool = True):
        super().__init__(message)
        self.transient = transient


class MoovitamixApiUnreachable(dg.Failure):
    """The API never answered: no connection, or no answer to the first requests.

    Not a MoovitamixApiError, and a Failure that skips the step's retry policy: a step
    retried 10 s later would only find out again what every endpoint just found out. The
    run fails at once, naming the URL and the cause; run retries and the next day's tick
    try again.
    """

    def __init__(self, description: str):
        super().__init__(description=description, allow_retries=False)


class Reachability:
    """Whether the API has ever answered this client, shared by every endpoint and page.

    A connection refused, a connect timeout or a first request left unanswered counts
    against a short budget (UNREACHABLE_AFTER_SECONDS from the first request) only while
    nothing has ever answered; past it, the circuit opens and every request fails at once
    with the first cause. Once any answer came (a 503 too), failures get the full retry
    budget: an API that dies mid-pull is retried as before.
    """

    def __init__(self, base_url: str, budget_seconds: float = UNREACHABLE_AFTER_SECONDS):
        self.base_url = base_url
        self.budget_seconds = budget_seconds
        self.answered = False
        self._lock = threading.Lock()
        self._first_request: Optional[float] = None
        self._failures = 0
        self._cause: Optional[str] = None

    def before_request(self, where: str) -> None:
        with self._lock:
            if self._first_request is None:
                self._first_request = time.monotonic()
        self.raise_if_open(where)

    def on_answer(self) -> None:
        self.answered = True

    def gives_up(self, cause: str, next_wait: float) -> bool:
        """After a failure that got no answer: True (and the circuit opens) when the budget is spent."""
        with self._lock:
            if self.answered:
                return False
            self._failures += 1
            if self._cause is None:
                elapsed = time.monotonic() - (self._first_request or time.monotonic())
                if elapsed + next_wait < self.budget_seconds:
                    return False
                self._cause = cause
            return True

    def raise_if_open(self, where: str) -> None:
        if self._cause is not None:
            elapsed = time.monotonic() - (self._first_request or time.monotonic())
            raise MoovitamixApiUnreachable(
                f"The Moovitamix API at {self.base_url} cannot be reached: {self._cause} "
                f"({self._failures} attempt(s) in {elapsed:.1f} s; {where}). Is it running, and is "
                "MOOVITAMIX_API_URL right? (`make dev` starts the emulator.)"
            )


class RetryLog:
    """Each retry as a WARNING naming its cause and wait, at most `lines_per_window` per window;
    the retries past that are counted by cause and summed up in one line when the window ends."""

    def __init__(
        self,
        log: logging.Logger,
        lines_per_window: int = RETRY_LINES_PER_WINDOW,
        window_seconds: float = RETRY_WINDOW_SECONDS,
    ):
        self.log = log
        self.lines_per_window = lines_per_window
        self.window_seconds = window_seconds
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        self._lines = 0
        self._unlogged: collections.Counter = collections.Counter()
        self._pulls = 0  # pulls in progress: their ends sum up what was not logged

    def retry(self, where: str, cause: str, attempt: int, budget: int, wait: float) -> None:
        with self._lock:
            if time.monotonic() - self._window_start >= self.window_seconds:
                self._summarize()
                self._window_start, self._lines = time.monotonic(), 0
            if self._lines < self.lines_per_window:
                self._lines += 1
                self.log.warning(f"{where}: {cause}; retry {attempt} of {budget} in {wait:.1f} s")
            else:
                self._unlogged[cause.split(" (")[0]] += 1

    def pull_started(self) -> None:
        with self._lock:
            self._pulls += 1

    def pull_ended(self) -> None:
        """Sums up the retries not logged yet when no pull is left; the window goes on."""
        with self._lock:
            self._pulls -= 1
            if not self._pulls:
                self._summarize()

    def page_done(self) -> None:
        """A page fetched after retries outside any pull (page 1 again, to see nothing moved)."""
        with self._lock:
            if not self._pulls:
                self._summarize()

    def flush(self) -> None:
        with self._lock:
            self._summarize()

    def _summarize(self) -> None:
        if self._unlogged:
            causes = ", ".join(f"{cause} x{count}" for cause, count in self._unlogged.most_common())
            seconds = time.monotonic() - self._window_start
            self.log.warning(f"{sum(self._unlogged.values())} more retries in the last {seconds:.0f} s: {causes}")
            self._unlogged = collections.Counter()


def _where(url: Optional[str]) -> str:
    """'/users?page=3&size=100' -> 'GET /users page 3'."""
    path, _, query = (url or "").partition("?")
    page = dict(part.partition("=")[::2] for part in query.split("&") if part).get("page")
    return f"GET {path}" + (f" page {page}" if page else "")


def _error_cause(error: BaseException) -> str:
    """A transport error in a few words: 'connection refused', 'no answer within 10 s', ..."""
    if isinstance(error, NewConnectionError):
        return str(error).split("Failed to establish a new connection: ")[-1].replace("[Errno 111] ", "").lower()
    if isinstance(error, (ConnectTimeoutError, ReadTimeoutError)):
        waited = re.search(r"timeout=([\d.]+)", str(error))
        within = f" within {float(waited.group(1)):g} s" if waited else ""
        return ("no connection" if isinstance(error, ConnectTimeoutError) else "no answer") + within
    if isinstance(error, ProtocolError):
        reason = error.args[1] if len(error.args) > 1 else error
        return f"connection dropped ({type(reason).__name__})"
    return f"{type(error).__name__} ({error})"


def _unanswered(error: Optional[BaseException]) -> bool:
    """A failure that shows no sign of the API: no connection, or nothing ever came back."""
    return isinstance(error, (ConnectTimeoutError, ReadTimeoutError))  # NewConnectionError included


class _CappedRetry(Retry):
    """urllib3's Retry, with a Retry-After wait capped at backoff_max like any backoff, that logs
    each retry (RetryLog) and gives up early on an API that never answered (Reachability)."""

    retry_log: Optional[RetryLog] = None
    reachability: Optional[Reachability] = None

    def new(self, **kw: Any) -> "_CappedRetry":
        retry = super().new(**kw)
        retry.retry_log, retry.reachability = self.retry_log, self.reachability
        return retry

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.backoff_max)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if response is not None and self.reachability is not None:
            self.reachability.on_answer()
        retry = super().increment(method, url, response, error, _pool, _stacktrace)  # raises when exhausted
        wait = retry.get_backoff_time()
        if response is not None and self.respect_retry_after_header and response.headers.get("Retry-After"):
            wait = retry.get_retry_after(response) or wait
        cause = f"HTTP {response.status}" if response is not None else _error_cause(error)
        if self.reachability is not None and _unanswered(error) and self.reachability.gives_up(cause, wait):
            raise MaxRetryError(_pool, url, error) from error
        if self.retry_log is not None:
            self.retry_log.retry(_where(url), cause, len(retry.history), len(self.history) + (self.total or 0), wait)
        return retry


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

    def add_counts(self, other: "FetchStats") -> None:
        """Adds another pull's counts to these (a pull of several passes); seconds are the caller's."""
        self.pages += other.pages
        self.requests += other.requests
        self.retries += other.retries
        self.records += other.records
        self.bytes += other.bytes

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
        self._last_pages = 0  # the number of pages the API reports
        self._progress_logged: Optional[float] = None

    def __iter__(self) -> Iterator[Page]:
        if self._started is not None:
            raise RuntimeError(f"the pull of /{self.endpoint} was already iterated; start a new one")
        self._started = time.monotonic()
        return self._pages()

    def _pages(self) -> Iterator[Page]:
        self.client.retry_log.pull_started()
        try:
            yield from self._ordered_pages()
        finally:
            self.client.retry_log.pull_ended()

    def _ordered_pages(self) -> Iterator[Page]:
        first = self._fetch(1)
        last_number = max(first.pages, 1)
        self._last_pages = first.pages
        self._progress_logged = time.monotonic()
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
            stats = self.stats
            self.client.log.info(
                f"GET /{self.endpoint}: {stats.pages} pages, {stats.records:,} records in {stats.seconds:.1f} s "
                f"({stats.records_per_second:,.0f} records/s, {stats.retries} retries)"
            )
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
        now = time.monotonic()
        if self._progress_logged is not None and now - self._progress_logged >= PROGRESS_SECONDS:
            self._progress_logged = now
            stats = self.stats
            self.client.log.info(
                f"GET /{self.endpoint}: page {stats.pages} of {self._last_pages}, {stats.records:,} records, "
                f"{stats.records_per_second:,.0f} records/s, {stats.retries} retries so far"
            )
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
        log: Optional[logging.Logger] = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size
        self.max_concurrency = max(1, max_concurrency)
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_factor = backoff_factor
        self.backoff_max_seconds = backoff_max_seconds
        self.log = log or LOG
        self.retry_log = RetryLog(self.log)
        self.reachability = Reachability(self.base_url)
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
        retry.retry_log, retry.reachability = self.retry_log, self.reachability
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
        self.retry_log.flush()
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
                wait = min(self.backoff_max_seconds, self.backoff_factor * 2 ** (attempt - 1))
                self.retry_log.retry(where, problem, attempt, self.max_retries, wait)
                time.sleep(wait)
            self.reachability.before_request(where)
            # Until the API has answered once, a first answer is not waited for long: an API
            # that accepts connections and never answers is as unreachable as one that refuses.
            read_timeout = self.timeout_seconds if self.reachability.answered else min(
                self.timeout_seconds, FIRST_ANSWER_TIMEOUT_SECONDS
            )
            try:
                response = self.session.get(
                    f"{self.base_url}/{endpoint}",
                    params={"page": number, "size": self.page_size},
                    timeout=(min(self.timeout_seconds, CONNECT_TIMEOUT_SECONDS), read_timeout),
                )
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as error:
                report(1, 0, 0)
                problem = f"broken response body ({type(error).__name__})"
                continue
            except requests.RequestException as error:  # urllib3 ran out of retries, or the API never answered
                self.reachability.raise_if_open(where)
                report(1 + self.max_retries, self.max_retries, 0)
                raise MoovitamixApiError(
                    f"{where}: {_describe(error)} after {self.max_retries} retries"
                ) from None
            self.reachability.on_answer()
            transport_retries = len(response.raw.retries.history) if response.raw.retries else 0
            report(1 + transport_retries, transport_retries, len(response.content))
            if response.status_code != 200:
                retried = f" after {transport_retries} retries" if response.status_code in RETRIED_STATUSES else ""
                raise MoovitamixApiError(
                    f"{where}: HTTP {response.status_code}{retried}: {self._redact(response.text)[:200]}",
                    transient=response.status_code in RETRIED_STATUSES or response.status_code >= 500,
                )
            try:
                body = decode_json(response)
            except ValueError as error:
                problem = f"body is not JSON ({error}; starts {self._redact(response.text)[:40]!r})"
                continue
            try:
                page = parse_page(body, number, raw=response.content)
                if attempt or transport_retries:
                    self.retry_log.page_done()
                return page
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
