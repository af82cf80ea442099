"""`sarco check-weights FILE [--dims 2|3] [--preset P] [--json]`: will these weights load? Say so before a long run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def target_encoder(file: Path, dims: int, preset: str | None):
    """The encoder `sarco train --pretrained` loads into, built from the same config source.

    The trainer's network is `build_smit_for_plans(..., config=smit_network_config(preset))` and its
    encoder is `SMITEncoder(1, dims, that config)`; so is this one, for the named preset. With no
    preset, the file's own stored config (a `sarco pretrain` encoder) is what its preset trains.
    """
    from sarco_nn.models.pretrained import config_from_checkpoint
    from sarco_nn.models.smit import TRANS_SMALL, SMITEncoder

    if preset is not None:
        from sarco_nn.presets import load_preset, smit_network_config

        config, against = smit_network_config(load_preset(preset)), f"the SMIT network of preset {preset!r}"
    else:
        stored = config_from_checkpoint(file)
        config, against = (stored, "the network stored in the file") if stored else (TRANS_SMALL, "Trans-Small")
    return SMITEncoder(in_channels=1, spatial_dims=dims, config=config), against


def check_weights(
    file: Path = typer.Argument(..., help="Pretrained SMIT weights: official .pt, nnU-Net checkpoint or sarco encoder.pt"),
    dims: int = typer.Option(2, "--dims", help="Network to check against: 2 (L3 slices) or 3 (volumes)"),
    json_output: bool = typer.Option(False, "--json", help="Print the load report as one JSON object"),
    min_fraction: float = typer.Option(0.9, "--min-fraction", help="Fraction of encoder tensors that must match"),
    preset: Optional[str] = typer.Option(
        None, "--preset", "-p", help="Check against the SMIT network this plan preset trains (what `sarco train "
        "--pretrained` loads into); default: the network stored in a sarco encoder file, else Trans-Small."),
) -> None:
    """Match FILE against the SMIT encoder `sarco train --pretrained` would build; print the load report (exit 0 = would load)."""
    if dims not in (2, 3):
        typer.echo(f"error: --dims must be 2 or 3, got {dims}", err=True)
        raise typer.Exit(2)
    from sarco_nn.errors import SarcoError
    from sarco_nn.models.pretrained import check_report, inspect_pretrained_encoder

    try:
        encoder, against = target_encoder(file, dims, preset)
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
        typer.echo(json.dumps({**report.to_json(), "checked_against": against, "loadable": error is None,
                               "error": error}))
    else:
        typer.echo(f"{report.summary_line()} (checked against {against})")
        if error:
            typer.echo(f"error: {error}", err=True)
    if error:
        raise typer.Exit(1)
