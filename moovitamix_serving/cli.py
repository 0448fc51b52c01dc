"""`moovitamix-recs`: serve the published recommendations over HTTP."""

import argparse
import logging
import os
import sys
from typing import List, Optional

import uvicorn

from moovitamix_serving.app import DEFAULT_STALE_AFTER_HOURS, create_app
from moovitamix_serving.files import DEFAULT_SERVING_PATH, SERVING_PATH_ENV


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moovitamix-recs",
        description="Read-only HTTP service of the recommendations the pipeline published (ml/serving_snapshot).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (default: 8001)")
    parser.add_argument(
        "--serving-path",
        default=os.getenv(SERVING_PATH_ENV, DEFAULT_SERVING_PATH),
        help=f"the published snapshot's folder (default: ${SERVING_PATH_ENV}, else {DEFAULT_SERVING_PATH})",
    )
    parser.add_argument(
        "--stale-after-hours", type=float, default=DEFAULT_STALE_AFTER_HOURS,
        help=f"/health reports stale past this age of the lists (default: {DEFAULT_STALE_AFTER_HOURS:g})",
    )  # fmt: skip
    parser.add_argument(
        "--poll-seconds", type=float, default=1.0, help="how often the manifest is read for a new version (default: 1)"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default: info)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stale_after_hours <= 0 or args.poll_seconds <= 0:
        print("moovitamix-recs: --stale-after-hours and --poll-seconds must be positive", file=sys.stderr)
        return 2
    # The service's own messages (versions loaded or refused) beside uvicorn's.
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    app = create_app(args.serving_path, stale_after_seconds=args.stale_after_hours * 3600, poll_seconds=args.poll_seconds)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
