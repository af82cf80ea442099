"""`sarco check-weights FILE [--dims 2|3] [--preset P [--tissues N]] [--json]` (over `api.check_weights`):
will these weights load?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from sarco_nn import api


def check_weights(
    file: Path = typer.Argument(..., help="Pretrained SMIT weights: official .pt, nnU-Net checkpoint or sarco encoder.pt"),
    dims: int = typer.Option(2, "--dims", help="Network to check against: 2 (L3 slices) or 3 (volumes)"),
    json_output: bool = typer.Option(False, "--json", help="Print the load report as one JSON object"),
    min_fraction: float = typer.Option(0.9, "--min-fraction",
                                       help="Fraction (0..1) of encoder tensors that must match"),
    preset: Optional[str] = typer.Option(
        None, "--preset", "-p", help="Check against the SMIT network this plan preset trains (what `sarco train "
        "--pretrained` loads into); default: the network stored in a sarco encoder file, else Trans-Small."),
    tissues: int = typer.Option(1, "--tissues", help="With --preset: check against that preset's network for a dataset "
                                "of this many tissues (4: muscle, IMAT, VAT, SAT; the planner widens the network for "
                                "several, e.g. cpu: embed 32), as `sarco pretrain --tissues` builds it."),
) -> None:
    """Match FILE against the SMIT encoder `sarco train --pretrained` would build; print the load report (exit 0 = would load)."""
    result = api.check_weights(file, dims=dims, min_fraction=min_fraction, preset=preset, tissues=tissues,
                               cli_names=True)
    if json_output:
        typer.echo(json.dumps(result.to_json()))
    elif result.report is not None:
        typer.echo(f"{result.report.summary_line()} (checked against {result.checked_against})")
    if result.error and not json_output:
        typer.echo(f"error: {result.error}", err=True)
    if not result.loadable:
        raise typer.Exit(1)
