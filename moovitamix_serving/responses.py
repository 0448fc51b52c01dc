"""A loaded version's answers, as JSON bytes built from fragments encoded once per version.

A response is made from one `Responses` object, hence from one version: a swap between two
requests changes the next answer whole, never half of one.
"""

import json
from typing import Optional

from moovitamix_serving.files import SOURCES, ServingVersion

# Scores are float32 in the files; six decimals say all they mean.
SCORE_DECIMALS = 6


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


class Responses:
    def __init__(self, version: ServingVersion) -> None:
        self.version = version
        meta = version.meta
        self._tracks = [
            f'"track_id":{int(track_id)},"name":{_json(name)},"artist":{_json(artist)},"genre":{_json(genre)}'
            for track_id, name, artist, genre in version.tracks
        ]
        self._reasons = [_json(reason) for reason in version.reasons]
        self._about = (
            f'"serving_version":{_json(meta["version"])},"model_version":{_json(meta["model_version"])},'
            f'"snapshot_date":{_json(meta["snapshot_date"])},"generated_at":{_json(meta["generated_at"])}'
        )

    def recommendations(self, user_id: int, k: int, favorite_genre: Optional[str] = None) -> tuple[str, bytes]:
        """(source, body) of a user's top k: their list when the version knows them, else the
        cold-start list of `favorite_genre`, or the global one when that genre is unknown too."""
        version = self.version
        row = version.user_row(user_id)
        if row >= 0:
            start = int(version.offsets[row])
            end = min(int(version.offsets[row + 1]), start + k)
            source = SOURCES[int(version.user_sources[row])]
            tracks = version.row_tracks[start:end].tolist()
            scores = version.row_scores[start:end].tolist()
            reasons = version.row_reasons[start:end].tolist()
        else:
            cold = version.cold_start(favorite_genre)
            source, tracks, scores, reasons = cold.source, cold.tracks[:k], cold.scores[:k], cold.reasons[:k]
        items = ",".join(
            f'{{"rank":{rank},{self._tracks[track]},"score":{round(score, SCORE_DECIMALS)!r},"reason":{self._reasons[reason]}}}'
            for rank, (track, score, reason) in enumerate(zip(tracks, scores, reasons), start=1)
        )
        body = f'{{"user_id":{user_id},{self._about},"source":"{source}","recommendations":[{items}]}}'
        return source, body.encode()
