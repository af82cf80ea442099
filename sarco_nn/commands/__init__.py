"""Thin typer command functions; `sarco_nn.cli` wires them into the `sarco` app."""
