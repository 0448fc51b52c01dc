"""The recommendations service's FastAPI app: read-only, stateless, over the serving snapshot files."""

import contextlib
import time
from pathlib import Path
from typing import List, Optional

from fastapi import FastAPI, Query
from fastapi import Path as PathParameter
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from moovitamix_serving import metrics
from moovitamix_serving.files import MAX_K, parse_utc_timestamp
from moovitamix_serving.live import LiveSnapshot

DEFAULT_STALE_AFTER_HOURS = 26.0  # the recommendations' freshness policy fails past 26 hours

INT64 = 2**63


# Response schemas, for /openapi.json only: bodies are built from the version's fragments.
class Recommendation(BaseModel):
    rank: int
    track_id: int
    name: Optional[str]
    artist: Optional[str]
    genre: Optional[str]
    score: float
    reason: Optional[str]


class UserRecommendations(BaseModel):
    user_id: int
    serving_version: str
    model_version: str
    snapshot_date: str
    generated_at: str
    source: str  # model, genre_fallback or popularity_fallback
    recommendations: List[Recommendation]


class Health(BaseModel):
    status: str  # ok, stale, degraded (a newer version was refused) or unavailable (nothing to serve)
    serving_version: Optional[str]
    model_version: Optional[str]
    snapshot_date: Optional[str]
    generated_at: Optional[str]
    age_seconds: Optional[float]
    stale: bool
    stale_after_seconds: float
    users: Optional[int]
    loaded_at: Optional[str]
    manifest_version: Optional[str]
    error: Optional[str]


def health(live: LiveSnapshot, stale_after_seconds: float) -> dict:
    responses = live.current
    meta = responses.version.meta if responses else {}
    age = time.time() - parse_utc_timestamp(meta["generated_at"]).timestamp() if responses else None
    stale = age is None or age > stale_after_seconds
    status = "unavailable" if responses is None else "degraded" if live.error else "stale" if stale else "ok"
    return {
        "status": status,
        "serving_version": meta.get("version"),
        "model_version": meta.get("model_version"),
        "snapshot_date": meta.get("snapshot_date"),
        "generated_at": meta.get("generated_at"),
        "age_seconds": round(age, 3) if age is not None else None,
        "stale": stale,
        "stale_after_seconds": stale_after_seconds,
        "users": meta.get("users"),
        "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(live.loaded_at)) if live.loaded_at else None,
        "manifest_version": live.manifest_version,
        "error": live.error,
    }


def version_metrics(live: LiveSnapshot, stale_after_seconds: float) -> list[str]:
    state = health(live, stale_after_seconds)
    lines = []
    if live.current is not None:
        lines += metrics.gauge(
            "serving_version_info", "The version served (value 1), its model and snapshot date.", 1,
            {key: state[key] for key in ("serving_version", "model_version", "snapshot_date")},
        )  # fmt: skip
        lines += metrics.gauge("serving_age_seconds", "Seconds since the served lists were generated.", state["age_seconds"])
        lines += metrics.gauge("serving_users", "Users with a list in the served version.", state["users"])
        lines += metrics.gauge("version_load_seconds", "How long the last version load and verification took.", live.load_seconds)
    lines += metrics.gauge("serving_stale", "1 when the served lists are older than the staleness limit, or none is served.", int(state["stale"]))
    lines += metrics.gauge("serving_degraded", "1 when the manifest names a version that was refused.", int(live.error is not None))
    lines += metrics.counter(
        "version_loads_total", "Versions loaded and swapped in, or refused.",
        {(("result", result),): live.loads[result] for result in ("loaded", "refused")},
    )  # fmt: skip
    return lines


def create_app(
    serving_path: Path,
    stale_after_seconds: float = DEFAULT_STALE_AFTER_HOURS * 3600,
    poll_seconds: float = 1.0,
) -> FastAPI:
    live = LiveSnapshot(Path(serving_path), poll_seconds=poll_seconds)
    request_metrics = metrics.RequestMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        live.start()
        yield
        live.stop()

    app = FastAPI(
        title="Moovitamix recommendations",
        description="Each user's recommended tracks, from the snapshot the pipeline published.",
        lifespan=lifespan,
    )
    app.state.live = live
    app.add_middleware(metrics.MetricsMiddleware, metrics=request_metrics)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get(
        "/users/{user_id}/recommendations",
        response_class=Response,
        responses={200: {"model": UserRecommendations}, 503: {"description": "Nothing published yet"}},
    )
    async def recommendations(
        user_id: int = PathParameter(ge=-INT64, le=INT64 - 1),
        k: int = Query(10, ge=1, le=MAX_K, description="How many tracks; a list shorter than k is returned whole."),
        favorite_genre: Optional[str] = Query(
            None, max_length=200, description="For a user the snapshot does not know: the genre of their cold-start list."
        ),
    ) -> Response:
        """The user's top k, or for a user the snapshot does not know, the cold-start list of
        their favourite genre (or the global one): never a 404."""
        responses = live.current  # read once: the whole answer comes from this version
        if responses is None:
            return JSONResponse({"detail": live.error or "no serving snapshot loaded"}, status_code=503)
        source, body = responses.recommendations(user_id, k, favorite_genre)
        request_metrics.sources[source] += 1
        return Response(body, media_type="application/json")

    @app.get("/health", response_model=Health)
    async def get_health() -> JSONResponse:
        """The version served and its age; 503 while nothing can be served."""
        state = health(live, stale_after_seconds)
        return JSONResponse(state, status_code=503 if state["status"] == "unavailable" else 200)

    @app.get("/metrics", response_class=Response)
    async def get_metrics() -> Response:
        """Prometheus text format."""
        lines = [*request_metrics.lines(), *version_metrics(live, stale_after_seconds)]
        return Response("\n".join(lines) + "\n", media_type=metrics.CONTENT_TYPE)

    return app
