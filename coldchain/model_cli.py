"""``coldchain model``: register source models with their description in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coldchain.console import console, user_errors

app = typer.Typer(help="Register models in the MLflow registry.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Register models in the MLflow registry."""


@app.command()
def register(
    path: Annotated[Path, typer.Argument(help="ONNX model file.")],
    name: Annotated[str, typer.Option(help="Registered model name.")],
    description: Annotated[Path, typer.Option(help="Model description (model.yaml).")],
    mlflow_uri: Annotated[str, typer.Option(help="MLflow tracking URI.")] = "sqlite:///mlflow.db",
    artifacts: Annotated[Path | None, typer.Option(help="Artifact folder for new experiments.")] = None,
) -> None:
    """Register PATH as a new version of NAME, with its description stored beside it."""
    from compiler import onnxio
    from compiler.description import load_description
    from compiler.errors import CompilerError
    from compiler.registry import register_model

    with user_errors(CompilerError):
        load_description(description)
        onnxio.load(path)
        registered = register_model(mlflow_uri, path, name, description.read_text(), artifacts)
    console.print(f"registered [bold]{registered.uri}[/] in {mlflow_uri}")
