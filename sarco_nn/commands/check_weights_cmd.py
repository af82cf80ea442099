"""`sarco check-weights FILE [--dims 2|3] [--json]`: will these weights load? Say so before a long run."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def check_weights(
    file: Path = typer.Argument(..., help="Pretrained SMIT weights: official .pt, nnU-Net checkpoint or sarco encoder.pt"),
    dims: int = typer.Option(2, "--dims", help="Network to check against: 2 (L3 slices) or 3 (volumes)"),
    json_output: bool = typer.Option(False, "--json", help="Print the load report as one JSON object"),
    min_fraction: float = typer.Option(0.9, "--min-fraction", help="Fraction of encoder tensors that must match"),
) -> None:
    """Match FILE against the Trans-Small SMIT encoder and print the load report (exit 0 = would load)."""
    if dims not in (2, 3):
        typer.echo(f"error: --dims must be 2 or 3, got {dims}", err=True)
        raise typer.Exit(2)
    from sarco_nn.errors import SarcoError
    from sarco_nn.models.pretrained import check_report, inspect_pretrained_encoder
    from sarco_nn.models.smit import SMITEncoder

    encoder = SMITEncoder(in_channels=1, spatial_dims=dims)
    try:
        report, _ = inspect_pretrained_encoder(encoder, file)
    except SarcoError as exc:
        if json_output:
            typer.echo(json.dumps({"source": str(file), "loadable": False, "error": str(exc)}))
        else:
            typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    error = None
    try:
        check_report(report, min_fraction)
    except SarcoError as exc:
        error = str(exc)
    if json_output:
        typer.echo(json.dumps({**report.to_json(), "loadable": error is None, "error": error}))
    else:
        typer.echo(report.summary_line())
        if error:
            typer.echo(f"error: {error}", err=True)
    if error:
        raise typer.Exit(1)
