"""The house's shape, read from the code's imports: no cycle, every import points down (config -> core -> engine ->
methods -> lab -> integrations), no private name crosses a module, and everything a user imported from the flat layout
still imports (the same objects)."""
import ast, importlib, re, tomllib
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT/"astlab"
FLOORS = ["config", "core", "engine", "methods", "lab", "integrations"]   # bottom to top


def imports():
    "{module: [(imported module, [names])]} for every astlab module, relative imports resolved, lazy ones included."
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        if f.name == "_modidx.py": continue
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        pkg = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
        deps = []
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom):
                m = ".".join(pkg[:len(pkg) - n.level + 1] + ([n.module] if n.module else [])) if n.level else (n.module or "")
                if m.startswith("astlab"): deps.append((m, [a.name for a in n.names]))
            elif isinstance(n, ast.Import):
                deps += [(a.name, []) for a in n.names if a.name.startswith("astlab")]
        out[name] = deps
    return out


def floor(mod):
    parts = mod.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 and parts[1] in FLOORS else None


def test_no_import_cycle():
    mods = imports()
    G = {m: {d for d, names in ds for d in [d, *(f"{d}.{x}" for x in names)] if d in mods and d not in (m, "astlab")}
         for m, ds in mods.items()}
    state, stack, cycles = {}, [], []
    def dfs(u):
        state[u] = 1; stack.append(u)
        for v in sorted(G[u]):
            if state.get(v) == 1: cycles.append(" -> ".join(stack[stack.index(v):] + [v]))
            elif v not in state: dfs(v)
        stack.pop(); state[u] = 2
    for m in sorted(G):
        if m not in state: dfs(m)
    assert not cycles, cycles
    assert len(mods) >= 30            # the check read the whole package (sub-packages included)


def test_every_import_points_down():
    "A module imports from its own floor or below: the core never reaches the Learner, the engine never a method."
    up = [(m, d) for m, ds in imports().items() for d, _ in ds
          if floor(m) is not None and floor(d) is not None and floor(d) > floor(m)]
    assert not up, up
    core = {d for m, ds in imports().items() if floor(m) == 1 for d, _ in ds}
    assert all(floor(d) == 1 for d in core), core          # the core imports nothing else from astlab, config included


def test_no_private_name_crosses_a_module():
    bad = [(m, d, n) for m, ds in imports().items() for d, names in ds for n in names
           if n.startswith("_") and not n.startswith("__") and d != m]
    assert not bad, bad


def test_every_module_sits_on_a_floor_and_its_notebook_beside_it():
    "Each module's notebook lives in the folder named like its package (nbs/core/ for astlab/core/...)."
    for f in PKG.rglob("*.py"):
        if f.name in ("__init__.py", "_modidx.py"): continue
        rel = f.relative_to(PKG)
        assert rel.parts[0] in FLOORS or rel.name == "config.py", rel
        src = re.search(r"File to edit: (\S+)\.", f.read_text().splitlines()[0])
        if src and len(rel.parts) > 1:
            assert Path(src.group(1)).parts[-2] == rel.parts[0], (rel, src.group(1))


FLAT = {   # what users imported from the flat layout: old path -> a public name in it
    "significance": "significance", "controller": "PIController", "selection": "ASTSelector", "distributed": "is_main",
    "api": "SparseStep", "learner": "Learner", "meters": "history_rows", "data": "get_dataloaders",
    "models": "create_model", "checkpoint": "CheckpointCB", "feedback": "ProgressCB", "preflight": "check_writable",
    "sparse": "SelectionCB", "stale": "StaleScoreCB", "epoch": "EpochSelectionCB", "budget": "BudgetCB",
    "rholoss": "RhoLossSelector", "train": "train", "experiment": "run_experiment", "analysis": "results_table",
    "compare": "compare", "verdict": "verdict_table", "tune": "tune", "imagenette": "imagenette_cli",
    "kaggle": "write_kernel", "hub": "push_cli", "integrations.tensorboard": "TensorBoardCB"}


@pytest.mark.parametrize("old", sorted(FLAT))
def test_flat_import_paths_still_work(old):
    import astlab
    mod = importlib.import_module(f"astlab.{old}")
    new = importlib.import_module(f"astlab.{astlab.MOVED[old]}")
    assert mod is new and mod.__name__ == f"astlab.{astlab.MOVED[old]}" and mod.__spec__.name == mod.__name__
    assert getattr(mod, FLAT[old]) is getattr(new, FLAT[old])
    if "." not in old: assert getattr(astlab, old) is new


def test_public_names():
    from astlab import SparseStep, PrunedDataset
    from astlab.core.api import SparseStep as S, PrunedDataset as P
    from astlab.meters import history_rows
    from astlab.engine.meters import history_rows as h
    assert (SparseStep, PrunedDataset, history_rows) == (S, P, h)
    with pytest.raises(AttributeError): import astlab; astlab.no_such_name


def test_console_scripts_resolve():
    eps = tomllib.loads((ROOT/"pyproject.toml").read_text())["project"]["scripts"]
    assert len(eps) == 9
    for name, target in eps.items():
        mod, fn = target.split(":")
        assert callable(getattr(importlib.import_module(mod), fn)), name
