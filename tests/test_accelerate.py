"""Accelerate: SparseStep over an `accelerator.prepare`d model, with the real library on CPU — one process, and two
processes launched by torchrun (Accelerate's MULTI_CPU, gloo) sharing one global controller."""
import os, socket, subprocess, sys, textwrap
from pathlib import Path

import pytest, torch

pytest.importorskip("accelerate")

LOOP = textwrap.dedent('''
    import sys, torch, torch.nn.functional as F
    from accelerate import Accelerator
    from astlab import SparseStep
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(1024, 10, generator=g), torch.randint(0, 4, (1024,), generator=g))
    dl = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True)
    model, opt, dl = accelerator.prepare(model, opt, dl)
    step = SparseStep(model, target=0.25)                    # astlab: one line ...
    thresholds, kept = [], []
    for epoch in range(2):
        for x, y in dl:
            x, y, w = step.select(x, y)                      # ... and one line in the loop
            loss = (F.cross_entropy(model(x), y, reduction="none") * w).mean()
            accelerator.backward(loss); opt.step(); opt.zero_grad()
            thresholds.append(step.threshold); kept.append(len(y))
    s = step.stats()
    torch.save(dict(th=thresholds, kept=kept, stats=s, world=accelerator.num_processes,
                    w=accelerator.unwrap_model(model).state_dict()), sys.argv[1] + f"/r{accelerator.process_index}.pt")
''')


def _free_port():
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_one_process(tmp_path):
    (tmp_path/"loop.py").write_text(LOOP)
    r = subprocess.run([sys.executable, str(tmp_path/"loop.py"), str(tmp_path)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    d = torch.load(tmp_path/"r0.pt", weights_only=False)
    assert d["world"] == 1 and d["stats"]["seen"] == 2048 and sum(d["kept"]) == d["stats"]["trained"]
    assert abs(d["stats"]["rate"] - 0.25) < 0.08


def test_two_processes_share_one_controller(tmp_path):
    (tmp_path/"loop.py").write_text(LOOP)
    bin_ = Path(sys.executable).parent
    r = subprocess.run([str(bin_/"torchrun"), "--nproc-per-node", "2", "--master-port", str(_free_port()),
                        str(tmp_path/"loop.py"), str(tmp_path)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (torch.load(tmp_path/f"r{i}.pt", weights_only=False) for i in range(2))
    assert a["world"] == b["world"] == 2
    assert a["th"] == b["th"] and a["kept"] != b["kept"]     # one controller, each rank its own batches
    assert a["stats"] == b["stats"] and a["stats"]["seen"] == 2048                 # stats() counts both ranks
    for k in a["w"]: assert torch.equal(a["w"][k], b["w"][k]), k                  # DDP kept the replicas equal
