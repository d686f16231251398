"""`make gpu-check` on a machine without CUDA: one line saying so, exit 2, before any work; `--plan` names its steps."""
import subprocess, sys, time
from pathlib import Path

import pytest, torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT/'benchmarks'/'gpu_check.py'


@pytest.mark.skipif(torch.cuda.is_available(), reason='on a GPU the real check would run')
def test_without_cuda_one_line_exit_2_and_nothing_run(tmp_path):
    before = set((ROOT/'benchmarks'/'results').iterdir())
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and 'no CUDA GPU' in lines[0], lines
    assert time.perf_counter() - t0 < 30                                   # no test, benchmark or run started
    assert set((ROOT/'benchmarks'/'results').iterdir()) == before          # and nothing written


def test_plan_names_the_three_steps_within_8_minutes():
    r = subprocess.run([sys.executable, str(SCRIPT), '--plan'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert [l.split(' ')[0] for l in lines] == ['cuda_tests', 'gpu_resnet50', 'astlab_run_bf16_compile']
    assert sum(int(l.split('(<= ')[1].split(' s)')[0]) for l in lines) <= 8 * 60
    run = lines[2]
    for s in ('training.mixed_precision=true', 'training.channels_last=true', 'training.compile=true', 'training.epochs=2'):
        assert s in run
    for t in ('test_timer_cuda_events', 'test_cuda_matches_cpu'): assert t in lines[0]
