"""Offline test setup: no hub, an empty hub cache, the demo world generated in a temp home, an
output store (razor.memo) of this session's own, shared by its workers."""

import os
import tempfile

_home = tempfile.mkdtemp(prefix="razor-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_home, "hf-empty")
os.environ.setdefault("RAZOR_HOME", os.path.join(_home, "razor"))
os.environ["PREFECT_HOME"] = os.path.join(_home, "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ.pop("MLFLOW_TRACKING_URI", None)
if "PYTEST_XDIST_WORKER" not in os.environ:  # the controller (or a serial run) names it; workers inherit it
    os.environ["RAZOR_OUTPUTS"] = os.path.join(_home, "outputs")
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # workers share the cores: each (and what it starts) computes on its share
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import CLIPModel  # noqa: E402

from razor.demo import world  # noqa: E402
from razor.demo.tokenizer import build_tokenizer  # noqa: E402
from razor.families.clip.adapter import ClipAdapter, demo_config  # noqa: E402


@pytest.fixture(autouse=True)
def _own_mlflow_store():
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ; drop it after each test so
    one workspace's store never leaks into the next test or a subprocess started from it."""
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def demo_manifest():
    from razor.demo.dataset import demo_manifest

    return demo_manifest()


@pytest.fixture(scope="session")
def prefect_server():
    """One ephemeral Prefect API (SQLite) for every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def tiny_clip():
    """A randomly initialised demo-architecture CLIP with the world's tokenizer."""
    torch.manual_seed(0)
    tok = build_tokenizer(world.vocabulary())
    model = CLIPModel(demo_config(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)).eval()
    return ClipAdapter(model, tok, {"size": 32, "mean": (0.5,) * 3, "std": (0.5,) * 3}, "tiny")


def pytest_itemcollected(item):
    """Under pytest-xdist (`--dist loadgroup`), tests that share a module-scoped fixture go to one
    worker, so what it builds is built once; each of its params (a family's chain) is a group of its own."""
    shared = sorted(name for name, defs in item._fixtureinfo.name2fixturedefs.items() if defs[-1].scope == "module")
    if shared:
        params = getattr(item, "callspec", None)
        key = "-".join(str(params.params[n]) for n in shared if params and n in params.params)
        item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}{'-' + key if key else ''}"))


def pytest_collection_modifyitems(items):
    """The end-to-end runs first, then the other slow ones (their order otherwise kept): with the longest
    work handed out first (`--no-loadscope-reorder` keeps this order), no worker is left running one
    long test alone at the end."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("stack") else 1 if item.get_closest_marker("slow") else 2)
