"""Command line: ``python -m laion_pipeline where|serve|rollback``.

``where`` prints the published database and its row counts; ``serve`` runs Datasette on it
(immutable, with the inspect file and the 2022 deployment's settings); ``rollback`` serves the
previously published version again (run it twice to undo).
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence

from laion_pipeline.assets.serving import rollback as restore_previous
from laion_pipeline.datasette import SERVE_SETTINGS
from laion_pipeline.errors import StaleInputError
from laion_pipeline.layout import REPORT_URL
from laion_pipeline.resources import build_resources


def _layout():
    return build_resources()["laion_data"].layout


def where() -> int:
    layout = _layout()
    if not layout.manifest_json.exists():
        print(f"Nothing published yet in {layout.published_dir}: run `make run` first.")
        return 1
    manifest = json.loads(layout.manifest_json.read_text(encoding="utf-8"))
    counts = ", ".join(f"{table} {n:,}" for table, n in manifest["row_counts"].items())
    print(f"Published database: {layout.published_db}")
    print(f"Rows: {counts}")
    report = layout.report_dir / "index.html"
    if report.exists():
        print(f"Analysis: {report} (charts and tables; served at {REPORT_URL})")
    print("Serve it with `make serve` (Datasette on http://127.0.0.1:8001).")
    return 0


def rollback() -> int:
    layout = _layout()
    try:
        manifest = restore_previous(layout)
    except StaleInputError as error:
        print(f"Nothing to roll back to: {error}", file=sys.stderr)
        return 1
    print(f"Published again: the version built at {manifest['built_at']} ({layout.published_db})")
    print(f"The version it replaced is kept in {layout.previous_dir}: run rollback again to undo.")
    print("Restart `make serve` to serve it.")
    return 0


def datasette_command(host: str, port: int) -> list[str]:
    """The Datasette command line that serves the published folder."""
    layout = _layout()
    command = [sys.executable, "-m", "datasette", "serve", "-i", str(layout.published_db)]
    command += ["--inspect-file", str(layout.inspect_json), "-m", str(layout.metadata_json)]
    for name, value in SERVE_SETTINGS.items():
        command += ["--setting", name, str(value)]
    return [*command, "-h", host, "-p", str(port)]


def serve(host: str, port: int) -> int:
    layout = _layout()
    if not layout.published_db.exists():
        print(f"{layout.published_db} does not exist: run `make run` first.", file=sys.stderr)
        return 1
    command = datasette_command(host, port)
    os.execv(command[0], command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laion_pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("where", help="print where the published database is")
    serve_parser = commands.add_parser("serve", help="serve the published database")
    serve_parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve_parser.add_argument("--port", type=int, default=8001, help="port to listen on")
    commands.add_parser("rollback", help="publish the previous version again")
    args = parser.parse_args(argv)
    if args.command == "where":
        return where()
    if args.command == "rollback":
        return rollback()
    return serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
