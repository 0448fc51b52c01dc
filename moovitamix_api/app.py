"""The emulator's FastAPI app: the upstream contract, admin routes and transport faults."""

import collections
import json
import threading
from typing import Any, Dict, Generic, List, Optional, TypeVar

from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel

from moovitamix_api.data import Dataset
from moovitamix_api.faults import TransportFaultMiddleware
from moovitamix_api.live import LiveDataset
from moovitamix_api.settings import ENTITIES, EmulatorSettings

T = TypeVar("T")


# Response schemas, for /openapi.json only: bodies are serialised straight from Dataset.
class Page(BaseModel, Generic[T]):
    items: List[T]
    total: int
    page: int
    size: int
    pages: int


class User(BaseModel):
    id: int
    first_name: str
    last_name: str
    email: str
    gender: str
    favorite_genres: str
    created_at: str
    updated_at: str


class Track(BaseModel):
    id: int
    name: str
    artist: str
    songwriters: str
    duration: str
    genres: str
    album: str
    created_at: str
    updated_at: str


class ListenHistory(BaseModel):
    user_id: Optional[int]
    items: Optional[List[int]]
    created_at: str
    updated_at: str


SCHEMAS = {"users": User, "tracks": Track, "listen_history": ListenHistory}


class ServerState:
    """The running server's settings, its dataset for the current as-of, the live state over
    it (data requests served, mutations) and fault attempt counts.

    One lock guards them: a page is generated and counted, and the burst that may follow it
    applied, before another page is generated, so a burst always falls between two pages.
    """

    def __init__(self, settings: EmulatorSettings):
        self._lock = threading.Lock()
        self._settings = settings
        self._dataset: Optional[Dataset] = None
        self._live: Optional[LiveDataset] = None
        self._attempts: Dict[tuple, int] = collections.Counter()

    @property
    def settings(self) -> EmulatorSettings:
        return self._settings

    def update(self, changes: Dict[str, Any]) -> EmulatorSettings:
        """Apply partial settings; fault attempt counts and the live state start again from zero."""
        with self._lock:
            self._settings = self._settings.replace(**changes)
            self._dataset = None
            self._live = None
            self._attempts.clear()
            return self._settings

    def dataset(self) -> Dataset:
        """The dataset of the current as-of (which follows the clock when as_of is unset)."""
        settings, dataset = self._settings, self._dataset
        as_of = settings.effective_as_of()
        if dataset is None or dataset.settings is not settings or dataset.as_of != as_of:
            dataset = Dataset(settings, as_of)
            self._dataset = dataset
        return dataset

    def _live_dataset(self) -> LiveDataset:
        """The live state over the current dataset; a new as-of (the clock's) starts it afresh."""
        dataset = self.dataset()
        if self._live is None or self._live.dataset is not dataset:
            self._live = LiveDataset(dataset)
        return self._live

    def serve_page(self, entity: str, page: int, size: int) -> bytes:
        """The body of one data request answered 200, counted as served."""
        with self._lock:
            live = self._live_dataset()
            body = live.page_json(entity, page, size)
            live.served()
            return body

    def mutations(self) -> Dict[str, Any]:
        with self._lock:
            return self._live_dataset().log()

    def next_attempt(self, request_key: tuple) -> int:
        with self._lock:
            self._attempts[request_key] += 1
            return self._attempts[request_key]

    def describe(self) -> Dict[str, Any]:
        """The settings, and the live count of each endpoint (as the next page would report it
        on page 1, before empty_endpoints)."""
        with self._lock:
            live = self._live_dataset()
            return {
                "settings": self._settings.to_json(),
                "effective_as_of": live.dataset.as_of.isoformat(),
                "counts": {entity: live.count(entity) for entity in ENTITIES},
                "data_requests": live.requests,
                "restarts": live.restart,
            }


def create_app(settings: Optional[EmulatorSettings] = None) -> FastAPI:
    state = ServerState(settings or EmulatorSettings())
    app = FastAPI(
        title="Moovitamix API (emulator)",
        description="Deterministic emulator of the Moovitamix music app's API.",
    )
    app.state.emulator = state

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(url="/docs")

    for entity in ENTITIES:
        _add_page_route(app, state, entity)

    @app.get("/_admin/state", include_in_schema=False)
    async def get_state() -> Dict[str, Any]:
        return state.describe()

    @app.get("/_admin/mutations", include_in_schema=False)
    async def get_mutations() -> Dict[str, Any]:
        return state.mutations()

    @app.post("/_admin/state", include_in_schema=False)
    async def post_state(changes: Dict[str, Any] = Body(...)) -> Dict[str, Any]:
        try:
            state.update(changes)
        except (TypeError, ValueError) as error:
            raise HTTPException(status_code=422, detail=str(error)) from error
        return state.describe()

    app.add_middleware(
        TransportFaultMiddleware, settings=lambda: state.settings, next_attempt=state.next_attempt
    )
    return app


def _add_page_route(app: FastAPI, state: ServerState, entity: str) -> None:
    async def get_page(
        page: int = Query(1, ge=1, description="Page number"),
        size: int = Query(100, ge=1, le=100, description="Page size"),
    ) -> Response:
        if entity in state.settings.failing_endpoints:
            detail = {"detail": f"emulated outage of /{entity} (503)"}
            return Response(content=json.dumps(detail), status_code=503, media_type="application/json")
        return Response(content=state.serve_page(entity, page, size), media_type="application/json")

    get_page.__name__ = f"get_{entity}"
    app.add_api_route(
        f"/{entity}",
        get_page,
        methods=["GET"],
        summary=f"One page of {entity.replace('_', ' ')}",
        responses={200: {"model": Page[SCHEMAS[entity]]}},  # type: ignore[index]
    )
