"""Closed-loop controller robustness: the seed's gains (kp=0.1, ki=0.01) on every stream shape in
`astlab.core.controller.STREAM_DISTS`, targets 0.1/0.25/0.5, 4 seeds each; 2000 batches of 128 scores whose scale falls
100x and jumps x10 for batches 900-1100. Worst case over seeds per (shape, target).

    python benchmarks/controller_robustness.py      # ~1 min on 2 CPU cores; writes benchmarks/results/controller_robustness.json
"""
import json, os, platform
from pathlib import Path
import pandas as pd
from astlab.core.controller import PIController, STREAM_DISTS, simulate, score_stream, tracking_report

rows = [dict(dist=d, seed=s, **tracking_report(simulate(PIController(t), score_stream(dist=d, seed=s))))
        for d in STREAM_DISTS for t in (0.1, 0.25, 0.5) for s in range(4)]
df = pd.DataFrame(rows)
worst = (df.groupby(['dist', 'target'])
           .agg(epoch_error=('epoch_error', 'max'), batch_mae=('batch_mae', 'mean'), noise_floor=('noise_floor', 'mean'),
                recovery_up=('recovery_up', 'max'), recovery_down=('recovery_down', 'max')).reset_index())
print(worst.round(4).to_string(index=False))
out = Path(__file__).parent/'results'/'controller_robustness.json'
out.parent.mkdir(parents=True, exist_ok=True)
tmp = out.with_suffix('.tmp')
tmp.write_text(json.dumps(dict(command='python benchmarks/controller_robustness.py', python=platform.python_version(),
                               platform=platform.platform(), worst_per_stream=worst.to_dict('records')), indent=1))
os.replace(tmp, out)
