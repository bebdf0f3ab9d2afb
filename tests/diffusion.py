"""What the SDXL and SD3 family tests share: `razor unlearn` on a model folder, and which tensors its delta changed."""

import json

import torch
from click.testing import CliRunner

from razor.cli import main
from razor.delta import Delta
from razor.families import load_model

PARAMS = {"razor": ["probes=2", "max_rounds=1", "forget_target=0.0"], "esd": ["max_steps=2", "eval_every=1"], "uce": []}


def unlearn(folder, manifest, forget: str, method: str, out) -> tuple[dict, set[str], Delta]:
    """(the JSON report, the parameters the delta changes when applied to the folder's model, the delta)
    of `razor unlearn --method METHOD` with a quick budget."""
    args = ["unlearn", "--model", str(folder), "--data", str(manifest), "--forget", forget, "--method", method,
            *(x for p in PARAMS[method] for x in ("--param", p)), "--out", str(out), "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{"):])
    delta = Delta.load(out / "delta.safetensors")
    base, edited = load_model(str(folder)), load_model(str(folder))
    delta.apply_to(edited)
    return report, {n for n, p in edited.parameters().items() if not torch.equal(p, base.parameters()[n])}, delta
