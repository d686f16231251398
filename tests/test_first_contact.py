"""First-contact fixes: the printed resume command is redacted as the config redacts; a second Ctrl-C (which ends a
run at once) still says how to resume; `results_table` takes results that carry a run name but no path."""
import sys
import pytest


def test_resume_command_redacts_secret_keys_and_secret_values(monkeypatch):
    from astlab.lab.train import resume_command
    monkeypatch.setenv("HF_TOKEN", "hf_sekrit1234")
    argv = ["/venv/bin/astlab-run", "--config", "c.yaml", "--set", "dataset.name=org/hf_sekrit1234",
            "hub.api_key=plainvalue", "training.lr=0.1", "--resume", "old.pt"]
    cmd = resume_command("x/last.pt", argv)
    assert "sekrit" not in cmd and "plainvalue" not in cmd, cmd
    assert cmd == "astlab-run --config c.yaml --set 'dataset.name=org/***' 'hub.api_key=***' training.lr=0.1 --resume auto"


def test_second_ctrl_c_prints_the_resume_command(tmp_path, capsys):
    from astlab.lab.experiment import build_config, cli_guard
    from astlab.lab.train import train, LAST_RUN
    cfg = build_config(None, ["model.name=resnet_tiny", "dataset.image_size=8", "dataset.num_samples=64",
                              "training.batch_size=32", "training.epochs=1", "training.device=cpu",
                              f"logging.output_dir={tmp_path}", "training.progress=false"])
    monkeypatch_argv = ["astlab-run", "--config", "c.yaml"]
    old = sys.argv; sys.argv = monkeypatch_argv
    try:
        train(cfg, log=lambda *a: None)
        def interrupted(): raise KeyboardInterrupt
        assert cli_guard(interrupted) == 130
    finally: sys.argv = old
    err = capsys.readouterr().err
    assert LAST_RUN["checkpoint"].exists()
    assert "interrupted; resume from its last checkpoint with: astlab-run --config c.yaml --resume auto" in err, err
    LAST_RUN["checkpoint"] = tmp_path/"nowhere.pt"
    cli_guard(interrupted)
    assert "before the first checkpoint" in capsys.readouterr().err


def test_results_table_needs_no_path_when_the_run_is_named():
    from astlab.lab.analysis import results_table
    r = dict(run_name="r1", method="ast", target_activation=0.25, best_accuracy=0.9, epochs_completed=1,
             total_time_hours=0.01, training_history=dict(epoch=[1], val_acc=[0.9], activation_rate=[0.25]))
    assert results_table([r]).run.tolist() == ["r1"]
    assert results_table([{k: v for k, v in r.items() if k != "run_name"} | dict(results_path="/a/final_results_x.json")]).run.tolist() == ["final_results_x"]
