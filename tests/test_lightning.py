"""Lightning: SparseStep inside training_step via SparseCallback, with the real library on CPU — rate/threshold/FLOPs
logged, the controller stored in Lightning checkpoints, and a resumed fit continuing it exactly."""
import csv, warnings

import pytest, torch, torch.nn.functional as F

pl = pytest.importorskip("lightning.pytorch")
from astlab.integrations.lightning import SparseCallback


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
        self.kept = []
    def forward(self, x): return self.net(x)
    def training_step(self, batch, i):
        x, y = batch
        x, y, w = self.sparse.select(x, y)
        self.kept.append(len(y))
        return (F.cross_entropy(self(x), y, reduction="none") * w).mean()
    def configure_optimizers(self): return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _data():
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(384, 10, generator=g), torch.randint(0, 4, (384,), generator=g))
    return torch.utils.data.DataLoader(ds, batch_size=32)


def _trainer(tmp_path, epochs, **kw):
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False,
                      enable_model_summary=False, log_every_n_steps=1, **kw)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        yield


def test_logs_rate_threshold_and_flops(tmp_path):
    torch.manual_seed(0)
    cb, model = SparseCallback(target=0.25, flops=2e3), Net()
    _trainer(tmp_path, 2, callbacks=[cb], logger=pl.loggers.CSVLogger(tmp_path), enable_checkpointing=False).fit(model, _data())
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    rates = [float(r["ast/rate"]) for r in rows if r.get("ast/rate")]
    assert len(rates) == 24 and all(r["ast/threshold"] for r in rows if r.get("ast/rate"))
    s = cb.step.stats()
    assert rates[-1] == pytest.approx(s["rate"]) and float(rows[-1]["ast/flops"]) == pytest.approx(s["flops"])
    assert s["seen"] == 2 * 384 and s["trained"] == sum(model.kept) < 0.5 * 2 * 384   # only the subset was trained


def test_checkpoint_holds_the_controller_and_resume_continues_it(tmp_path):
    torch.manual_seed(0)
    straight, m1 = SparseCallback(target=0.3), Net()
    _trainer(tmp_path/"a", 2, callbacks=[straight], logger=False, enable_checkpointing=False).fit(m1, _data())

    torch.manual_seed(0)
    first, m2 = SparseCallback(target=0.3), Net()
    ck = pl.callbacks.ModelCheckpoint(dirpath=tmp_path/"ck", save_last=True)
    _trainer(tmp_path/"b", 1, callbacks=[first, ck], logger=False).fit(m2, _data())
    saved = torch.load(tmp_path/"ck"/"last.ckpt", weights_only=False)
    (state,) = [v for k, v in saved["callbacks"].items() if k.startswith("SparseCallback")]
    assert state["selector"]["controller"]["steps"] == 12 and state["counts"]["seen"] == 384

    second, m3 = SparseCallback(target=0.3), Net()          # a fresh process: new module, new callback
    _trainer(tmp_path/"c", 2, callbacks=[second], logger=False, enable_checkpointing=False).fit(
        m3, _data(), ckpt_path=tmp_path/"ck"/"last.ckpt")
    assert m3.kept == m1.kept[12:]                           # the second epoch selects exactly as the straight run did
    assert second.step.state_dict()["selector"] == straight.step.state_dict()["selector"]
    for k, v in m1.state_dict().items(): assert torch.equal(v, m3.state_dict()[k]), k
