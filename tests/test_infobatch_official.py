"""InfoBatch's annealing boundary equals the reference sampler's.

`OfficialIBSampler` transcribes the epoch logic of `IBSampler` in NUS-HPC-AI-Lab/InfoBatch (infobatch/infobatch.py):
`reset()` runs once in `__init__` and once per `__iter__` (one per epoch); it prunes while `iterations <= stop_prune`
(= num_epochs * delta) and trains on everything after, then counts `iterations += 1`. Only the prune-or-full decision
is transcribed; the draw itself is checked in nbs/core/03_selection.ipynb."""
import pytest, torch


class OfficialIBSampler:
    def __init__(self, num_epochs, delta):
        self.stop_prune = num_epochs * delta      # InfoBatch.stop_prune
        self.iterations, self.pattern = 0, []
        self.reset()                              # the reference calls reset() in __init__ too
    def reset(self):
        self.pattern.append('full' if self.iterations > self.stop_prune else 'prune')
        self.iterations += 1
    def __iter__(self):
        self.reset(); return self
    def __next__(self): raise StopIteration       # (the reference yields its sample indices here)


def official_full_epochs(E, delta):
    s = OfficialIBSampler(E, delta)
    for _ in range(E): iter(s)                    # one __iter__ per epoch (the DataLoader's)
    return [p == 'full' for p in s.pattern[1:]]   # pattern[0]: the reset in __init__, before any epoch


@pytest.mark.parametrize("delta", [0.5, 0.7, 0.8, 0.875, 0.9, 1.0])
def test_annealing_epochs_match_the_reference_sampler(delta):
    from astlab.core.selection import InfoBatchSelector
    from astlab import PrunedDataset
    for E in range(1, 41):
        ref = official_full_epochs(E, delta)
        assert [InfoBatchSelector(delta=delta).full_epoch(e, E) for e in range(E)] == ref, (E, delta)
        ds = PrunedDataset(list(range(8)), epochs=E, delta=delta)
        assert [not ds.pruning(e) for e in range(E)] == ref, (E, delta)
    assert official_full_epochs(8, 0.875) == [False] * 7 + [True]       # the paper's default at 8 epochs: one full epoch


def test_a_run_anneals_on_the_reference_epochs_and_compare_counts_them(tmp_path):
    "Through train(): the last epoch of an 8-epoch InfoBatch run is full, and the cost model counts it."
    from astlab.lab.experiment import build_config
    from astlab.lab.train import train
    from astlab.lab.compare import cost_model
    from astlab.engine.meters import history_rows
    ov = ["model.name=resnet_tiny", "dataset.image_size=8", "dataset.num_samples=256", "training.batch_size=32",
          "training.epochs=8", "training.device=cpu", "training.warmup_epochs=0", "ast.method=infobatch",
          f"logging.output_dir={tmp_path}", "training.progress=false"]
    cfg = build_config(None, ov)
    torch.set_num_threads(1)
    res = train(cfg, log=lambda *a: None)
    rates = [r['activation_rate'] for r in history_rows(res)]
    ref = official_full_epochs(8, 0.875)
    assert [r == 1.0 for r in rates] == [e == 0 or f for e, f in enumerate(ref)], rates   # epoch 1: nothing scored yet
    c = cost_model(cfg)                      # 2 full epochs of 8 (the first, the annealed last) + 6 at rate r
    assert c(0.5) == pytest.approx((2 + 6 * 0.5) / 8)
