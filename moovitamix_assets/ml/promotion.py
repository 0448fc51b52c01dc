"""The rule that decides whether a newly trained model replaces the champion."""

from dataclasses import dataclass
from typing import Optional

PROMOTION_METRIC = "ndcg_at_k"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide_promotion(
    challenger: dict,
    popularity: dict,
    champion: Optional[dict],
    min_relative_gain: float,
) -> Decision:
    """Promote only a model whose NDCG beats both popularity and the champion by the margin.

    All three are measured on the same test data. The margin is relative: 0.01 asks for
    1% more NDCG, so noise between two equally good models does not swap them.
    """
    score = challenger[PROMOTION_METRIC]
    bar = 1.0 + min_relative_gain
    if score <= popularity[PROMOTION_METRIC] * bar:
        return Decision(
            False,
            f"NDCG@k {score:.4f} does not beat popularity's {popularity[PROMOTION_METRIC]:.4f} "
            f"by {min_relative_gain:.1%}",
        )
    if champion is not None and score <= champion[PROMOTION_METRIC] * bar:
        return Decision(
            False,
            f"NDCG@k {score:.4f} does not beat the champion's {champion[PROMOTION_METRIC]:.4f} "
            f"by {min_relative_gain:.1%}",
        )
    against = f", champion {champion[PROMOTION_METRIC]:.4f}" if champion else ", no champion yet"
    return Decision(
        True,
        f"NDCG@k {score:.4f} beats popularity {popularity[PROMOTION_METRIC]:.4f}{against}",
    )
