"""DataLoader workers and the host-to-device path (issue 12 item 10 and the CUDA stand-ins): `training.num_workers: auto`
resolves per device and data source, the run prints and records the count; pinned memory and non-blocking copies on the
CUDA path, checked without a GPU."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import astlab.engine.data as D
from astlab.config import ConfigError, config_from_dict, load_config
from astlab.engine.data import get_dataloaders, resolve_num_workers


def _folder(root, n=4, size=12):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root/c).mkdir(parents=True, exist_ok=True)
        for j in range(n): Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root/c/f"{j}.png")
    return root


def _cfg(tmp_path, *overrides):
    return load_config(overrides=['dataset.type=digits', 'dataset.num_samples=120', 'dataset.image_size=8',
                                  'model.name=resnet_tiny', 'training.batch_size=32', 'training.epochs=1',
                                  'training.device=cpu', 'training.progress=false', 'training.mixed_precision=false',
                                  f'logging.output_dir={tmp_path}', *overrides], env_file=None)


# ---------------------------------------------------------------- config: an int as before, or 'auto'

def test_num_workers_default_is_auto_and_an_int_still_works():
    assert config_from_dict({}).training.num_workers == 'auto'
    assert config_from_dict({'training': {'num_workers': 8}}).training.num_workers == 8
    assert load_config(overrides=['training.num_workers=3'], env_file=None).training.num_workers == 3
    assert load_config(overrides=['training.num_workers=auto'], env_file=None).training.num_workers == 'auto'


@pytest.mark.parametrize("bad,says", [('many', "Choose one of: auto or a number >= 0"), (-1, "a value >= 0"),
                                      (2.5, "expected int or str"), (True, "Choose one of: auto or a number >= 0")])
def test_bad_num_workers_names_the_key(bad, says):
    with pytest.raises(ConfigError) as e: config_from_dict({'training': {'num_workers': bad}}, source='c.yaml')
    msg = str(e.value)
    assert "'training.num_workers'" in msg and says in msg and '\n' not in msg, msg


# ---------------------------------------------------------------- the resolved count

@pytest.mark.filterwarnings("ignore:This DataLoader will create")   # the loaders are built, never iterated
def test_auto_on_a_mocked_cuda_device_uses_the_cpus(tmp_path, monkeypatch):
    "folder data on 'cuda' with 'auto': min(8, usable CPUs - 1) workers, pinned, persistent; CPU or in-memory data: 0."
    root = _folder(tmp_path/'imgs')
    monkeypatch.delenv('LOCAL_WORLD_SIZE', raising=False)
    cfg = config_from_dict({'dataset': {'type': 'folder', 'train_dir': str(root), 'image_size': 8}, 'training': {'batch_size': 2}})
    for cpus, want in ((6, 5), (32, 8), (1, 0)):
        monkeypatch.setattr(D, 'usable_cpus', lambda: cpus)
        tr, va, _ = get_dataloaders(cfg, device='cuda')
        assert (tr.num_workers, va.num_workers) == (want, want)
        assert tr.pin_memory and tr.persistent_workers == (want > 0)
    monkeypatch.setattr(D, 'usable_cpus', lambda: 6)
    assert get_dataloaders(cfg, device='cpu')[0].num_workers == 0                 # CPU: workers would share the model's cores
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')                                    # torchrun: 2 processes share the 6 CPUs
    assert get_dataloaders(cfg, device='cuda:1')[0].num_workers == 2
    digits = config_from_dict({'dataset': {'type': 'digits', 'num_samples': 100}})
    assert get_dataloaders(digits, device='cuda')[0].num_workers == 0             # in memory: nothing to decode
    fixed = config_from_dict({'dataset': {'type': 'digits', 'num_samples': 100}, 'training': {'num_workers': 1}})
    assert get_dataloaders(fixed, device='cpu')[0].num_workers == 1               # an int is taken as it is
    assert resolve_num_workers(0, 'folder', 'cuda', cpus=16) == 0


def test_run_header_and_results_record_the_workers(tmp_path):
    "The run header says how many workers were chosen, and the results file records the resolved count."
    from astlab.lab.train import train
    lines = []
    res = train(_cfg(tmp_path), log=lines.append)
    header = next(l for l in lines if l.startswith('run '))
    assert '0 data workers (training.num_workers: auto)' in header, header
    saved = json.loads(open(res['results_path']).read())
    assert saved['num_workers'] == 0 and saved['config']['training']['num_workers'] == 'auto'
    root = _folder(tmp_path/'imgs', n=16)
    lines = []
    res = train(_cfg(tmp_path/'f', 'dataset.type=folder', f'dataset.train_dir={root}', 'dataset.num_samples=null',
                     'training.num_workers=1', 'training.batch_size=8'), log=lines.append)
    assert json.loads(open(res['results_path']).read())['num_workers'] == 1
    assert '1 data workers' in next(l for l in lines if l.startswith('run ')) and 'auto' not in lines[-1]


# ---------------------------------------------------------------- pinned memory and non-blocking copies (CUDA path)

def test_cuda_loaders_pin_memory_and_their_copies_keep_it():
    "Batches for a CUDA device come from page-locked memory (so their copy can overlap compute); CPU batches do not."
    from astlab.methods.stale import IndexSampler, stale_loader
    from astlab.lab.train import shard_loaders
    cfg = config_from_dict({'dataset': {'type': 'digits', 'num_samples': 100}, 'training': {'batch_size': 16}})
    for dev in ('cuda', 'cuda:1', torch.device('cuda', 0)):
        tr, va, _ = get_dataloaders(cfg, device=dev)
        assert tr.pin_memory and va.pin_memory, dev
    assert stale_loader(tr, IndexSampler(len(tr.dataset))).pin_memory        # stale scoring's loader
    assert all(dl.pin_memory for dl in shard_loaders(tr, va, 0))               # DDP's per-rank loaders
    tr, va, _ = get_dataloaders(cfg, device='cpu')
    assert not tr.pin_memory and not va.pin_memory


def test_batch_transfer_to_cuda_is_non_blocking(monkeypatch):
    "The learner moves x, y and the indices with non_blocking=True (no host sync per batch); spied on Tensor.to."
    from astlab.engine.learner import Learner
    model = torch.nn.Linear(4, 2)
    learn = Learner(model, None, None, torch.optim.SGD(model.parameters(), lr=0.1), device='cuda')
    calls = []
    def spy(self, *a, **k): calls.append((a, k)); return self
    monkeypatch.setattr(torch.Tensor, 'to', spy)
    b = (torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), torch.arange(3))
    learn._to(b)
    assert len(calls) == 3, calls                                              # x, y and idx each travel once
    assert all(torch.device(a[0]).type == 'cuda' and k.get('non_blocking') is True for a, k in calls), calls
