"""`moovitamix-api`: serve the emulator. Every option comes from EmulatorSettings' fields."""

import argparse
import dataclasses
import datetime as dt
import sys
from typing import List, Optional

import uvicorn

from moovitamix_api.app import create_app
from moovitamix_api.settings import EmulatorSettings, coerce_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moovitamix-api",
        description="Deterministic emulator of the Moovitamix music app's API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default: info)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    for field in dataclasses.fields(EmulatorSettings):
        flag = "--" + field.metadata.get("cli", field.name.replace("_", "-"))
        help_text = field.metadata["help"]
        if isinstance(field.default, tuple) and field.default:
            help_text += f" (default: {' '.join(field.default)})"
        elif field.default not in (None, ()):
            help_text += f" (default: {field.default})"
        kwargs = {"dest": field.name, "help": help_text, "default": field.default}
        if isinstance(field.default, tuple):
            metavar = field.metadata.get("metavar", help_text.split(":")[0])
            kwargs.update(action="append", default=None, metavar=metavar)
        elif field.metadata.get("choices"):
            kwargs["choices"] = field.metadata["choices"]
        elif isinstance(field.default, dt.date) or field.name == "as_of":
            kwargs["metavar"] = "YYYY-MM-DD"
        parser.add_argument(flag, **kwargs)
    return parser


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    values = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(EmulatorSettings)
        if getattr(args, field.name) is not None
    }
    return EmulatorSettings(**coerce_settings(values))


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        print(f"moovitamix-api: {error}", file=sys.stderr)
        return 2
    uvicorn.run(
        create_app(settings), host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
