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
    from astlab.engine.learner import Callback
    from astlab.methods.per_batch import SelectionCB
    from astlab.lab.train import train
    from astlab.engine.checkpoint import _module
    from astlab.core.distributed import rank
    from astlab.engine.meters import history_rows
    class Thresholds(Callback):
        order = 100
        def before_fit(self): self.t, self.k = [], []
        def after_batch(self):
            self.t.append(self.learn.cb(SelectionCB).selector.threshold); self.k.append(len(self.learn.yb))
    rec = Thresholds()
    out, overrides = sys.argv[1], sys.argv[2:]
    res = train(load_config(overrides=overrides), log=lambda *a: None, extra_cbs=(rec,))
    from astlab.lab.train import HistoryCB
    local_j = rec.learn.cb(HistoryCB).meter._energy_last_j        # this rank's own energy (proxy), not reduced
    torch.save(dict(thresholds=rec.t, trained=rec.k, model=_module(rec.learn.model).state_dict(),
                    world=res['world_size'], history=history_rows(res), local_j=local_j,
                    energy_j=res['totals']['energy_j']), f"{out}/rank{rank()}.pt")
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
    # energy is summed over ranks like samples and FLOPs (it used to be rank 0's alone)
    assert a['energy_j'] == pytest.approx(a['local_j'] + b['local_j'], rel=1e-9) and a['energy_j'] == b['energy_j']
    assert min(a['local_j'], b['local_j']) > 0


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
    from astlab.engine.learner import Callback
    from astlab.lab.train import train
    from astlab.core.distributed import rank
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


@pytest.mark.parametrize('extra', [(), ('training.grad_accum_steps=2',), ('ast.backward_batch=full', 'training.grad_accum_steps=2')])
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

# ---------------------------------------------------------------- collectives on the group's device (issue 12 item 1)

def _group_worker(r, port1, port2, out):
    import torch.distributed as dist
    from torch import nn
    import astlab.core.distributed as D
    from astlab.engine.learner import Learner, Callback
    res = {}
    # 1. a group with nccl's device map (cuda only), made with gloo so it runs on CPU
    dist.init_process_group('cuda:gloo', init_method=f'tcp://127.0.0.1:{port1}', rank=r, world_size=2)
    res['group_device'] = str(D.group_device())
    try: dist.all_reduce(torch.tensor([3.0])); res['cpu_tensor'] = 'ok'
    except RuntimeError as e: res['cpu_tensor'] = str(e)
    try: res['sum'] = D.all_reduce_sum(3)
    except Exception as e: res['sum'] = f"{type(e).__name__}: {e}"
    dist.destroy_process_group()
    # 2. DDP on 2 ranks vs one process on the same global batches: each rank trains a different number of samples
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port2}', rank=r, world_size=2)
    x, y = _global_data()
    keep = _KEEP[r]
    class Trim(Callback):
        def before_batch(self):
            k = keep[self.learn.iter]; self.learn.xb, self.learn.yb = self.learn.xb[:k], self.learn.yb[:k]
    torch.manual_seed(0); m = nn.Linear(4, 3)
    ddp = torch.nn.parallel.DistributedDataParallel(m)
    half = [(x[j, r*4:(r+1)*4], y[j, r*4:(r+1)*4], None) for j in range(len(x))]
    Learner(ddp, half, None, torch.optim.SGD(ddp.parameters(), lr=0.5), cbs=[Trim()], grad_accum_steps=2).fit(1)
    res['weight'] = m.weight.detach().clone(); res['bias'] = m.bias.detach().clone()
    dist.destroy_process_group()
    torch.save(res, f"{out}/group{r}.pt")


_KEEP = ([1, 4, 2, 3], [4, 2, 4, 1])     # samples each rank trains of its 4 per batch


def _global_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 8, 4, generator=g), torch.randint(0, 3, (4, 8), generator=g)


def test_collectives_use_the_groups_device_and_ddp_matches_one_process(tmp_path):
    import torch.multiprocessing as mp
    from torch import nn
    from astlab.engine.learner import Learner
    mp.spawn(_group_worker, args=(free_port(), free_port(), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path/f'group{r}.pt', weights_only=True) for r in range(2))
    for res in (a, b):
        assert res['group_device'].startswith('cuda')             # the group's device map, not the CPU
        assert 'No backend type associated with device type cpu' in res['cpu_tensor']   # the crash astlab used to hit
        if torch.cuda.is_available(): assert res['sum'] == [6.0]
        else:   # no GPU here: all_reduce_sum put its tensor on the group's device (cuda), which this machine lacks
            assert isinstance(res['sum'], str) and 'device type cpu' not in res['sum'], res['sum']
    # one process, the same global batches (both ranks' trained samples), grad_accum_steps=2
    x, y = _global_data()
    batches = [(torch.cat([x[j, :4][:_KEEP[0][j]], x[j, 4:][:_KEEP[1][j]]]),
                torch.cat([y[j, :4][:_KEEP[0][j]], y[j, 4:][:_KEEP[1][j]]]), None) for j in range(len(x))]
    torch.manual_seed(0); m = nn.Linear(4, 3)
    Learner(m, batches, None, torch.optim.SGD(m.parameters(), lr=0.5), grad_accum_steps=2).fit(1)
    for res in (a, b):
        torch.testing.assert_close(res['weight'], m.weight.detach()); torch.testing.assert_close(res['bias'], m.bias.detach())


def test_every_collective_passes_the_learners_device(monkeypatch):
    "With the group's default device poisoned ('meta'), every collective of a training run still lands on the learner's device."
    import astlab.core.distributed as D, astlab.engine.learner as LM
    from torch import nn
    from astlab.engine.learner import Learner, TimeLimitCB, SignalCB, NonFiniteCB
    from astlab.methods.per_batch import SelectionCB
    from astlab.core.selection import make_selector
    seen = []
    def fake_all_reduce(t, *a, **k):        # two identical ranks
        seen.append(t.device); t.mul_(2)
    monkeypatch.setattr(D, 'world_size', lambda: 2); monkeypatch.setattr(LM, 'world_size', lambda: 2)
    monkeypatch.setattr(D, '_device', torch.device('meta'))
    monkeypatch.setattr(D.dist, 'all_reduce', fake_all_reduce)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    dl = [(torch.randn(16, 4), torch.randint(0, 3, (16,)), torch.arange(16)) for _ in range(4)]
    sel = make_selector('ast', target=0.5)
    sel.rate_reduce = lambda c, n: D.all_reduce_sum(c, n, device=torch.device('cpu'))
    learn = Learner(m, dl, dl[:1], torch.optim.SGD(m.parameters(), lr=0.1), grad_accum_steps=2,
                    cbs=[SelectionCB(sel, generator=torch.Generator().manual_seed(0)), TimeLimitCB(60), SignalCB(),
                         NonFiniteCB()])
    learn.fit(1)
    # 4 batches x (the batch's one agreement + the rate) + validation + epoch counts (was > 10: 4-5 per batch)
    assert len(seen) >= 10 and set(seen) == {torch.device('cpu')}, set(seen)


# ---------------------------------------------------------------- ast.backward_batch under DDP (issue 19)

def _gather_worker(r, port, out):
    "2 ranks, AST with backward batches of 8: record which samples each rank selects and which each train pass trains."
    import torch.distributed as dist
    from torch import nn
    from astlab.engine.learner import Learner, Callback
    from astlab.methods.per_batch import SelectionCB
    from astlab.core.selection import make_selector
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=r, world_size=2)
    x, y = _gather_data()
    sel = make_selector('ast', target=0.25, min_active=2); sel.defer_update = True   # one global controller, as train() wires it
    class Rec(Callback):
        order = 100
        def before_fit(self): self.passes, self.selected, self.thr = [], [], []
        def after_pred(self):
            if self.learn.training: self.passes.append((self.learn.iter, self.learn.train_idx.tolist()))
        def after_batch(self):
            self.selected += self.learn.idx[self.learn.selected].tolist(); self.thr.append(sel.threshold)
    torch.manual_seed(0); m = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    ddp = torch.nn.parallel.DistributedDataParallel(m)
    half = [(x[j, r*16:(r+1)*16], y[j, r*16:(r+1)*16], torch.arange(j*32 + r*16, j*32 + (r+1)*16)) for j in range(len(x))]
    rec = Rec()
    Learner(ddp, half, None, torch.optim.SGD(ddp.parameters(), lr=0.5),
            cbs=[SelectionCB(sel, backward_batch=8), rec]).fit(1)
    torch.save(dict(passes=rec.passes, selected=rec.selected, thr=rec.thr, model=m.state_dict()), f"{out}/gather{r}.pt")
    dist.destroy_process_group()


def _gather_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 32, 4, generator=g), torch.randint(0, 3, (12, 32), generator=g)


def test_ddp_backward_batches_match_one_process_on_the_global_passes(tmp_path):
    "Both ranks train in the same batches, each selected sample once; the weights equal one process on the global passes."
    import torch.multiprocessing as mp
    from torch import nn
    from astlab.engine.learner import Learner
    mp.spawn(_gather_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path/f'gather{r}.pt', weights_only=True) for r in range(2))
    assert a['thr'] == b['thr']                                          # one global controller
    assert [i for i, _ in a['passes']] == [i for i, _ in b['passes']]   # train passes in the same batches on both ranks
    assert 1 < len(a['passes']) < 12                                     # gathered: fewer passes than batches
    for res in (a, b):
        trained = [k for _, p in res['passes'] for k in p]
        assert sorted(trained) == sorted(res['selected'])               # each selected sample trained exactly once
        assert all(len(p) <= 8 for _, p in res['passes'][:-1])
    for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), k
    x, y = _gather_data(); X, Y = x.reshape(-1, 4), y.reshape(-1)
    batches = [(X[torch.tensor(p0 + p1)], Y[torch.tensor(p0 + p1)], None) for (_, p0), (_, p1) in zip(a['passes'], b['passes'])]
    torch.manual_seed(0); m = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    Learner(m, batches, None, torch.optim.SGD(m.parameters(), lr=0.5)).fit(1)
    for k, v in m.state_dict().items(): torch.testing.assert_close(a['model'][k], v)


def _stop_worker(r, port, out):
    "Stop a 2-rank gathering fit mid-queue: the checkpoint state (written by rank 0) gives every rank its own queue back."
    import torch.distributed as dist
    from torch import nn
    from astlab.engine.learner import Learner, Callback, CancelFitException
    from astlab.methods.per_batch import SelectionCB
    from astlab.core.selection import make_selector
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=r, world_size=2)
    x, y = _gather_data()
    half = [(x[j, r*16:(r+1)*16], y[j, r*16:(r+1)*16], torch.arange(j*32 + r*16, j*32 + (r+1)*16)) for j in range(len(x))]
    def sel_cb():
        s = make_selector('ast', target=0.25, min_active=2); s.defer_update = True
        return SelectionCB(s, backward_batch=8)
    class Stop(Callback):
        order = 70
        def after_batch(self):
            if self.learn.iter == 2: raise CancelFitException()
    class Save(Callback):   # what CheckpointCB does on rank 0, after SelectionCB gathered the queues
        order = 45
        def after_cancel_fit(self):
            if r == 0: torch.save(self.learn.cb(SelectionCB).state_dict(), f"{out}/sel.pt")
    torch.manual_seed(0); m = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    ddp = torch.nn.parallel.DistributedDataParallel(m)
    cb = sel_cb()
    Learner(ddp, half, None, torch.optim.SGD(ddp.parameters(), lr=0.5), cbs=[cb, Stop(), Save()]).fit(1)
    own = [p['idx'].tolist() for p in cb.step.queue.parts]
    dist.barrier()
    new = sel_cb(); L = Learner(ddp, half, None, torch.optim.SGD(ddp.parameters(), lr=0.5), cbs=[new]); L.skip_batches = 3
    new.load_state_dict(torch.load(f"{out}/sel.pt", weights_only=True))
    torch.save(dict(own=own, restored=[p['idx'].tolist() for p in new.step.queue.parts]), f"{out}/stop{r}.pt")
    dist.destroy_process_group()


def test_ddp_checkpoint_mid_queue_gives_every_rank_its_own_queue(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_stop_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path/f'stop{r}.pt', weights_only=True) for r in range(2))
    assert a['own'] and b['own'] and a['own'] != b['own']        # both ranks stopped with samples queued, different ones
    assert a['restored'] == a['own'] and b['restored'] == b['own']
