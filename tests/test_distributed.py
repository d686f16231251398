"""DDP on CPU with 2 processes (gloo): one global controller, identical weights, results written once."""
import json, os, socket, subprocess, sys, textwrap
from pathlib import Path

import pytest, torch

BIN = Path(sys.executable).parent
ARGS = ['dataset.num_samples=320', 'training.batch_size=32', 'model.name=resnet_tiny', 'training.device=cpu',
        'training.epochs=2', 'training.progress=false']

WORKER = textwrap.dedent('''
    import json, sys, torch
    from astlab.config import load_config
    from astlab.learner import Callback
    from astlab.sparse import SelectionCB
    from astlab.train import train
    from astlab.checkpoint import _module
    from astlab.distributed import rank
    from astlab.meters import history_rows
    class Thresholds(Callback):
        order = 100
        def before_fit(self): self.t, self.k = [], []
        def after_batch(self):
            self.t.append(self.learn.cb(SelectionCB).selector.threshold); self.k.append(len(self.learn.yb))
    rec = Thresholds()
    out, overrides = sys.argv[1], sys.argv[2:]
    res = train(load_config(overrides=overrides), log=lambda *a: None, extra_cbs=(rec,))
    torch.save(dict(thresholds=rec.t, trained=rec.k, model=_module(rec.learn.model).state_dict(),
                    world=res['world_size'], history=history_rows(res)), f"{out}/rank{rank()}.pt")
''')


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_two_ranks_share_one_controller_and_end_with_identical_weights(tmp_path):
    (tmp_path/'worker.py').write_text(WORKER)
    port = free_port()
    procs = []
    for r in range(2):
        env = {**os.environ, 'RANK': str(r), 'LOCAL_RANK': str(r), 'WORLD_SIZE': '2', 'MASTER_ADDR': '127.0.0.1',
               'MASTER_PORT': str(port), 'OMP_NUM_THREADS': '1'}
        procs.append(subprocess.Popen([sys.executable, str(tmp_path/'worker.py'), str(tmp_path), *ARGS,
                                       f'logging.output_dir={tmp_path}/out'], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    a, b = (torch.load(tmp_path/f'rank{r}.pt', weights_only=True) for r in range(2))
    assert a['world'] == b['world'] == 2
    assert len(a['thresholds']) == len(b['thresholds']) > 0
    assert a['thresholds'] == b['thresholds']                 # the same threshold on both ranks at every step
    assert a['trained'] != b['trained']                       # ... while each rank selected from its own batch
    assert min(a['trained'] + b['trained']) >= 2              # never fewer than 2 per rank (BatchNorm)
    for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), k
    assert a['history'] == b['history'] or [h['val_acc'] for h in a['history']] == [h['val_acc'] for h in b['history']]
    assert len(list((tmp_path/'out').glob('final_results_*.json'))) == 1      # written once, by rank 0


def test_torchrun_cli_writes_one_result_and_prints_one_summary(tmp_path):
    r = subprocess.run([str(BIN/'torchrun'), '--nproc-per-node', '2', '--master-port', str(free_port()), '--no-python',
                        str(BIN/'astlab-run'), '--output-dir', str(tmp_path), '--set', *ARGS],
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith('{')]
    assert len(lines) == 1
    res = json.loads(Path(json.loads(lines[0])['results_path']).read_text())
    assert res['world_size'] == 2 and res['complete']
    assert res['totals']['samples_seen'] == 2 * 320      # 2 epochs x (2 ranks x 160): every rank's samples count
    assert len(list(tmp_path.glob('final_results_*.json'))) == 1


COUNT_WORKER = textwrap.dedent('''
    import collections, json, sys, torch.distributed as dist
    from astlab.config import load_config
    from astlab.learner import Callback
    from astlab.train import train
    from astlab.distributed import rank
    calls, state = collections.Counter(), dict(phase='setup', batches=0)
    for name in ('all_reduce', 'broadcast', 'all_gather', 'all_gather_into_tensor', 'reduce_scatter_tensor', 'barrier',
                 'all_gather_object', 'broadcast_object_list'):
        def wrap(*a, _f=getattr(dist, name), _n=name, **k):
            calls[state['phase'], _n] += 1; return _f(*a, **k)
        setattr(dist, name, wrap)
    class Phase(Callback):
        def __init__(self, order, start): self.order, self.start = order, start
        def before_batch(self):
            if self.start and self.learn.training: state['phase'] = 'batch'; state['batches'] += 1
        def after_batch(self):
            if not self.start and self.learn.training: state['phase'] = 'between'
    out, overrides = sys.argv[1], sys.argv[2:]
    train(load_config(overrides=overrides), log=lambda *a: None, extra_cbs=(Phase(-10_000, True), Phase(10_000, False)))
    per = {n: c / state['batches'] for (p, n), c in calls.items() if p == 'batch'}
    json.dump(dict(per_batch=per, batches=state['batches']), open(f"{out}/calls{rank()}.json", 'w'))
''')


@pytest.mark.parametrize('extra', [(), ('training.grad_accum_steps=2',)])
def test_one_collective_per_batch(tmp_path, extra):
    "Controller rate, NaN guard, signal, wall-clock cap and accumulation count share one collective per batch."
    (tmp_path/'worker.py').write_text(COUNT_WORKER)
    port, procs = free_port(), []
    for r in range(2):
        env = {**os.environ, 'RANK': str(r), 'LOCAL_RANK': str(r), 'WORLD_SIZE': '2', 'MASTER_ADDR': '127.0.0.1',
               'MASTER_PORT': str(port), 'OMP_NUM_THREADS': '1'}
        procs.append(subprocess.Popen([sys.executable, str(tmp_path/'worker.py'), str(tmp_path), *ARGS, *extra,
                                       'training.max_minutes=600', f'logging.output_dir={tmp_path}/out'], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for r in range(2):
        d = json.loads((tmp_path/f'calls{r}.json').read_text())
        assert d['batches'] > 0 and sum(d['per_batch'].values()) == 1.0, d   # was 5: rate, NaN, time, signal, count
