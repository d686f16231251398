"""`make gpu-check`: everything that needs a CUDA GPU, in one command, for the first GPU anyone lends (<= 8 minutes on one
modern GPU), with one JSON under benchmarks/results/.

1. the CUDA-only tests (skipped on CPU: CUDA-event timing, the selection's device path, significance on CUDA == CPU);
2. benchmarks/gpu_resnet50.py: ResNet-50 at 224 px, full vs AST at r = 0.1 / 0.25 / 0.5 with and without full
   backward batches (`ast.backward_batch`), images/s and NVML joules per epoch;
3. a 2-epoch `astlab-run` with bf16 autocast, channels_last and torch.compile (synthetic ImageNet-sized data,
   ResNet-50, AST at r = 0.25 with full backward batches: fixed train-pass shapes for the compiler).

    python benchmarks/gpu_check.py            # all three; writes benchmarks/results/gpu_check_<gpu-name>.json
    python benchmarks/gpu_check.py --plan     # print the steps' commands and time limits, run nothing (any machine)

Without a CUDA GPU it prints one line saying so and exits 2 before any work. Each step has a time limit (the sum stays
under 8 minutes); a step that fails or runs out of time is recorded (exit status, last lines of its output) and the
others still run; the exit status is 1 if any step failed.
"""
import argparse, json, os, re, shutil, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable

CUDA_TESTS = ['tests/test_meters.py::test_timer_cuda_events', 'tests/test_selection.py::test_cuda',
              'tests/test_significance.py::test_cuda_matches_cpu']

def astlab_run(tmp:Path) -> list:
    """The `astlab-run` entry point beside this Python, or (a checkout that is not installed, e.g. a lent GPU machine with
    the sources on PYTHONPATH) a script file doing what the entry point does (fastcore's `call_parse` reads sys.argv
    only when called from a module file, so `python -c` would silently ignore the arguments)."""
    exe = Path(PY).parent/'astlab-run'
    if exe.exists(): return [str(exe)]
    tmp.mkdir(parents=True, exist_ok=True)
    (script := tmp/'astlab_run.py').write_text("import sys\nfrom astlab.lab.experiment import run_cli\nsys.exit(run_cli())\n")
    return [PY, str(script)]

def steps(tmp:Path) -> list:
    "(name, command, time limit in s): the whole check stays under 8 minutes."
    run_args = ['model.name=resnet50', 'dataset.type=synthetic', 'dataset.image_size=224', 'dataset.num_samples=3200',
                'dataset.num_classes=1000', 'training.batch_size=256', 'training.epochs=2', 'training.mixed_precision=true',
                'training.channels_last=true', 'training.compile=true', 'training.device=cuda', 'ast.method=ast',
                'ast.target_activation=0.25', 'ast.backward_batch=full']
    return [('cuda_tests', [PY, '-m', 'pytest', '-q', '-rs', *CUDA_TESTS], 60),
            ('gpu_resnet50', [PY, str(HERE/'gpu_resnet50.py'), '--epochs', '2', '--out-dir', str(tmp/'bench')], 200),
            ('astlab_run_bf16_compile', [*astlab_run(tmp), '--output-dir', str(tmp/'run'), '--no-progress',
                                         '--set', *run_args], 180)]

def cuda_or_exit():
    "One line and exit 2 without a CUDA GPU. Without torch (a fresh machine before `make install`): nvidia-smi decides."
    try: import torch
    except ImportError:
        if shutil.which('nvidia-smi') and subprocess.run(['nvidia-smi', '-L'], capture_output=True).returncode == 0: return
        print("gpu-check: no CUDA GPU here (no torch, and nvidia-smi lists no GPU): nothing run"); sys.exit(2)
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU here (torch {torch.__version__}: torch.cuda.is_available() is False): nothing run")
        sys.exit(2)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--plan', action='store_true', help="print the steps' commands and time limits; run nothing")
    ap.add_argument('--cuda-or-exit', action='store_true', help='only check for a CUDA GPU (exit 2 without one, 0 with)')
    args = ap.parse_args()
    if args.plan:
        for name, cmd, limit in steps(Path('<tmp>')): print(f"{name} (<= {limit} s): {' '.join(cmd)}")
        sys.exit(0)
    cuda_or_exit()
    if args.cuda_or_exit: sys.exit(0)

    import torch
    sys.path.insert(0, str(ROOT))
    from astlab.lab.train import versions, device_info
    tmp = Path(tempfile.mkdtemp(prefix='astlab-gpu-check-'))
    started, t0, out = datetime.now(timezone.utc).isoformat(timespec='seconds'), time.perf_counter(), {}
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'PYTHONPATH': f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for name, cmd, limit in steps(tmp):
        print(f"gpu-check: {name} (<= {limit} s)", flush=True)
        s0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
            rc, text = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            rc, text = 'timeout', ((e.stdout or b'').decode(errors='replace') if isinstance(e.stdout, bytes) else (e.stdout or ''))
        out[name] = dict(command=' '.join(cmd), returncode=rc, wall_s=round(time.perf_counter() - s0, 1),
                         output_tail=text[-3000:])
        print(f"gpu-check: {name}: exit {rc} in {out[name]['wall_s']} s", flush=True)
    bench = sorted((tmp/'bench').glob('gpu_resnet50_*.json'))
    if bench: out['gpu_resnet50']['results'] = json.loads(bench[-1].read_text())
    runs = sorted((tmp/'run').glob('final_results_*.json'))
    if runs:
        r = json.loads(runs[-1].read_text())
        out['astlab_run_bf16_compile']['results'] = {k: r.get(k) for k in ('best_accuracy', 'epochs_completed', 'complete',
                                                     'totals', 'phase_s', 'amp', 'device', 'training_history')}
    dev = torch.device('cuda', torch.cuda.current_device())
    gpu = torch.cuda.get_device_name(dev)
    res = dict(benchmark='gpu_check', started_at=started, finished_at=datetime.now(timezone.utc).isoformat(timespec='seconds'),
               runtime_s=round(time.perf_counter() - t0, 1), gpu=gpu, device=device_info(dev), versions=versions(),
               steps=out, ok=all(v['returncode'] == 0 for v in out.values()), command=' '.join(['python', *sys.argv]))
    path = HERE/'results'/f"gpu_check_{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"gpu-check: {'all steps passed' if res['ok'] else 'some steps FAILED'} in {res['runtime_s']} s; wrote {path}")
    sys.exit(0 if res['ok'] else 1)
