"""The layout docs/ARCHITECTURE.md describes: no import cycles, a folder per family behind the contract,
and nothing outside a family's folder importing its parts."""

import ast
import subprocess
import sys
from pathlib import Path

from razor.families import FAMILIES
from razor.family import Family

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("razor", "stages", "flows")


def imports() -> dict[str, set[str]]:
    """Module → the project modules it imports (at the top or inside a function)."""
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = imports()

    def reaches(start: str, target: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == target:
                return True
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        return False

    cycles = sorted((a, b) for a in graph for b in graph[a] if reaches(b, a))
    assert not cycles, cycles


def test_every_family_is_a_folder_behind_the_contract_and_only_its_own_code_reads_its_parts():
    graph = imports()
    assert FAMILIES and all(isinstance(f, Family) for f in FAMILIES.values())
    for name, fam in FAMILIES.items():
        assert (ROOT / "razor" / "families" / name / "__init__.py").is_file()
        assert set(fam.default_towers) <= set(fam.towers) and "razor" in fam.methods
        inside = f"razor.families.{name}"
        for module, targets in graph.items():
            if module.startswith((inside, "razor.demo", "razor.architectures")):
                continue  # the family itself, and what builds its models (the demo trainers, the real layouts)
            reach = {t for t in targets if t.startswith(inside + ".")}
            # a baseline made for one family (esd, uce) and another family's judge may use it; nothing shared may
            shared = not module.startswith(("razor.baselines.", "razor.families."))
            assert not (shared and reach), (module, reach)
    for module, targets in graph.items():  # no family reaches for the registry (it imports them)
        assert not (module.startswith("razor.families.") and "razor.families" in targets), module


def test_detecting_a_family_and_the_curate_stage_load_no_model_library_and_a_part_only_its_own():
    probe = ("import sys, stages.curate; from razor.families import FAMILIES, detect; "
             "said = [detect(f.demo).name for f in FAMILIES.values() if f.demo]; "
             "heavy = ('torch', 'transformers', 'diffusers', 'sklearn'); "
             "before = [m for m in heavy if m in sys.modules]; detect('demo').task; "
             "print(said, before, [m for m in sys.modules if m.startswith('razor.families.') and m.endswith('.parts')])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    demos = [name for name, f in FAMILIES.items() if f.demo]
    assert out.stdout.strip() == f"{demos} [] ['razor.families.clip.parts']", out.stdout
