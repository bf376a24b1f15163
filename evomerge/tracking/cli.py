"""CLI verb ``dashboard``: optuna-dashboard on a run's optuna journal (registered on ``evomerge.cli.cli``)."""

from __future__ import annotations

from pathlib import Path

import click

from evomerge.cli import cli


@cli.command("dashboard")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (localhost by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0: any free port).")
def dashboard_cmd(run_dir: Path, host: str, port: int) -> None:
    """optuna-dashboard on RUN_DIR: trials, history, parameter importances and the Pareto front, live while the
    search runs, whatever its optimizer. Ctrl-C stops it."""
    from evomerge.tracking.serve import dashboard_server

    server, journal = dashboard_server(run_dir, host, port)
    click.echo(f"optuna-dashboard: http://{host}:{server.server_port}/dashboard  ({journal}; Ctrl-C to stop)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
