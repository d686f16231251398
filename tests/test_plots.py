"""Issue 11 item 10: the plots show only panels with something to show, each with a legend and units; energy says when
it is a proxy and shows its noise; the table's `energy_savings` is the whole run's; the README's demo table agrees with
its own FLOPs column.

Results are made by hand (no training): both history layouts, the rows astlab wrote and the seed's dict of lists.
"""
import re
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from astlab.lab.analysis import plot_run, plot_traces, results_table, run_panels, plot_comparison, plot_pareto

ROOT = Path(__file__).resolve().parents[1]


def fake_result(method, target=0.25, epochs=4, source="proxy_tdp", columns=False):
    ctl = method == "ast"
    rows = [dict(epoch=e, train_acc=0.5 + 0.1*e, val_acc=0.45 + 0.1*e, energy_savings=0.407 if ctl else 0.0,
                 activation_rate=target if method != "full" else 1.0, time_min=0.1*e, threshold=0.5/e if ctl else None,
                 step_time_ms=20.0 + e, est_energy_kj=1.5*e + 0.1*(e % 2), est_flops_g=100.0*e) for e in range(1, epochs + 1)]
    hist = {k: [r[k] for r in rows] for k in rows[0]} if columns else rows
    return dict(run_name=f"digits_{method}", method=method, target_activation=target, best_accuracy=0.85,
                epochs_completed=epochs, total_time_hours=0.01, training_history=hist, energy_source=source,
                config=dict(metrics=dict(gpu_tdp_watts=300.0)), complete=True, results_path=f"/x/{method}.json",
                totals=dict(flops=400e9, energy_j=6000.0, energy_savings=0.4145 if ctl else 0.0))


def axes_of(fig):
    "The main axes (not the twin step-time axes) with their titles."
    return [a for a in fig.axes if a.get_title()]


@pytest.mark.parametrize("columns", [False, True])
def test_panels_have_something_to_show(columns):
    for method, want in (("ast", ["activation", "threshold", "accuracy", "cost"]), ("random", ["activation", "accuracy", "cost"]),
                         ("full", ["accuracy", "cost"])):
        r = fake_result(method, columns=columns)
        assert run_panels(r) == want, method
        fig = plot_run(r)
        titles = [a.get_title() for a in axes_of(fig)]
        assert len(titles) == len(want), titles
        assert any("threshold" in t for t in titles) == (method == "ast"), titles
        assert not [a for a in fig.axes if not a.get_visible()]
        plt.close(fig)
    assert plot_traces(fake_result("full", columns=columns)) is None     # nothing to trace: no empty panel
    assert len(axes_of(plot_traces(fake_result("random", columns=columns)))) == 1
    assert len(axes_of(plot_traces(fake_result("ast", columns=columns)))) == 2


def test_every_panel_has_a_legend_and_units():
    rs = [fake_result(m) for m in ("ast", "random", "full")]
    figs = [plot_run(r) for r in rs] + [plot_traces(rs[0]), plot_comparison(rs), plot_pareto(rs)]
    for fig in figs:
        for ax in axes_of(fig) or fig.axes:
            leg = ax.get_legend()
            assert leg is not None and [t.get_text() for t in leg.get_texts()], ax.get_title()
            assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
            assert re.search(r"\((fraction|kJ|ms|nats|fraction of samples)|fraction|GFLOPs|nats", ax.get_ylabel() + ax.get_xlabel()), \
                (ax.get_title(), ax.get_ylabel())
    for f in figs: plt.close(f)


def test_energy_is_labelled_a_proxy_with_its_noise():
    def cost_texts(r):
        fig = plot_run(r); ax = [a for a in axes_of(fig) if a.get_title().startswith("cost")][0]
        t = [x.get_text() for x in ax.get_legend().get_texts()] + [ax.get_title()]; plt.close(fig); return " ".join(t)
    proxy = cost_texts(fake_result("ast"))
    assert "proxy: wall time × 300 W" in proxy and "mean ± sd" in proxy and "machine load" in proxy
    measured = cost_texts(fake_result("ast", source="nvml"))
    assert "measured (NVML)" in measured and "proxy" not in measured and "mean ± sd" in measured


def test_table_energy_savings_is_the_whole_runs():
    df = results_table([fake_result("ast"), fake_result("ast", columns=True) | dict(run_name="cols")])
    assert list(df.energy_savings) == [0.4145, 0.4145], "totals, not the last epoch's 0.407"
    assert list(df.activation) == [0.25, 0.25] and df.final_acc.tolist() == pytest.approx([0.85, 0.85])


def test_readme_demo_table_savings_are_totals():
    "The README's demo table: AST's FLOPs saving is 1 - its counted FLOPs / full data's (the whole run, not one epoch)."
    text = (ROOT/"README.md").read_text()
    table = text[text.index("### What `make demo` printed"):]
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in table.splitlines()[:8] if l.startswith("| ")}
    full = float(rows["full data"][1])
    for name in ("AST, target 0.25", "random 25 %"):
        gflops, savings = float(rows[name][1]), float(rows[name][3])
        assert savings == pytest.approx(1 - gflops/full, abs=6e-4), (name, savings, 1 - gflops/full)
