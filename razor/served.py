"""A registered version as an MLflow pyfunc model. `mlflow.pyfunc.load_model("models:/clip-demo@production")`
rebuilds the version from its base model and its chain of deltas (each delta checks the weights it
applies to; the result must have the version's registered weights sha256), and `predict` answers
in its family's terms (razor.family: `serve`): CLIP zero-shot labels, SD images, VLM answers."""

from __future__ import annotations

import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from razor.delta import Delta, weights_sha256
from razor.errors import RazorError
from razor.families import load_model, of

REQUIREMENTS = ("razor", "torch", "transformers", "diffusers", "safetensors", "mlflow", "pandas", "pillow")


class Version(mlflow.pyfunc.PythonModel):
    """A registered version: its base model plus its deltas, rebuilt on load."""

    def load_context(self, context) -> None:
        config = context.model_config
        self.adapter = load_model(config["base"])
        for i in range(config["deltas"]):
            Delta.load(context.artifacts[f"delta{i + 1}"]).apply_to(self.adapter)
        actual = weights_sha256(self.adapter.model)
        if actual != config["weights_sha256"]:
            raise RazorError(f"this version of {config['name']} rebuilt from {config['base']} and its deltas has weights "
                             f"sha256 {actual[:12]}… but was registered with {config['weights_sha256'][:12]}…; "
                             f"run `razor audit {config['name']}@VERSION` to find the changed artifact")
        self.answer = of(self.adapter).serve

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.answer(self.adapter, pd.DataFrame(model_input), context.model_config)


def save(folder: Path, adapter, sets, base: str, deltas: list[Path], identity: dict) -> None:
    """The pyfunc model folder of `adapter` (already edited: its output gives the signature): `base`
    (a demo model's name, an absolute folder or a hub id) plus `deltas` in order; `identity`: the
    registered model's name and the weights_sha256 the rebuilt weights must have."""
    family = of(adapter)
    config, example = family.serving(adapter, sets)
    signature = infer_signature(example, family.serve(adapter, example, config))
    with tempfile.TemporaryDirectory(prefix="razor-chain-") as tmp:
        artifacts = {}
        for i, path in enumerate(deltas, 1):  # each under a name of its own: MLflow stores an artifact by its file name
            artifacts[f"delta{i}"] = str(shutil.copy2(path, Path(tmp) / f"delta{i}.safetensors"))
        mlflow.pyfunc.save_model(folder, python_model=str(Path(__file__).with_name("version_model.py")), artifacts=artifacts,
                                 model_config=dict(config, base=base, deltas=len(deltas), **identity), signature=signature,
                                 input_example=example, pip_requirements=requirements())


def requirements() -> list[str]:
    """The installed versions of what rebuilding and answering need (a family's library it does not use included)."""
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return out
