"""The upstream API's contract as the pipeline relies on it: endpoints and their fields.

Every field the contract documents is required: a record that lacks one, carries a null
in one, or carries a value that cannot be typed is rejected with its reason (see
core/sql/*.sql). Fields the contract does not name are kept in the raw snapshot and
reported by the schema check.
"""

from typing import Mapping, Sequence

USERS = "users"
TRACKS = "tracks"
LISTEN_HISTORY = "listen_history"

ENTITIES: Sequence[str] = (USERS, TRACKS, LISTEN_HISTORY)

CONTRACT_FIELDS: Mapping[str, Sequence[str]] = {
    USERS: (
        "id",
        "first_name",
        "last_name",
        "email",
        "gender",
        "favorite_genres",
        "created_at",
        "updated_at",
    ),
    TRACKS: (
        "id",
        "name",
        "artist",
        "songwriters",
        "duration",
        "genres",
        "album",
        "created_at",
        "updated_at",
    ),
    LISTEN_HISTORY: ("user_id", "items", "created_at", "updated_at"),
}

# The field that identifies a record of each endpoint upstream, and its column in core.
KEY_FIELD: Mapping[str, str] = {USERS: "id", TRACKS: "id", LISTEN_HISTORY: "user_id"}
KEY_COLUMN: Mapping[str, str] = {USERS: "user_id", TRACKS: "track_id", LISTEN_HISTORY: "user_id"}
