"README.md is rendered from nbs/index.ipynb; they must agree."
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_readme_matches_index_notebook():
    sys.path.insert(0, str(ROOT/'tools'))
    from render_readme import render
    assert (ROOT/'README.md').read_text() == render(), "README.md is stale: run `make readme` and commit it"

def test_readme_names_the_two_commands():
    text = (ROOT/'README.md').read_text()
    assert 'make demo' in text and 'make test' in text
    assert 'settings.ini' in text and '[tool.nbdev]' in text

def test_ci_runs_make_test():
    assert 'make test' in (ROOT/'.ci'/'run').read_text()

def test_readme_states_install_size_and_time():
    "A newcomer learns before `make demo` that the install is ≈6 GB (CUDA torch wheels) and how long it takes."
    text = (ROOT/'README.md').read_text()
    quick = text[text.index('## Quick start'):text.index('## Train')]
    assert '6 GB' in quick and 'CUDA' in quick and 'minutes' in quick
