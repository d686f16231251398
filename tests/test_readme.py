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


def test_layout_table_lists_every_notebook():
    "The README's layout table names every notebook in nbs/ (the tour first), so a newcomer finds each one."
    text = (ROOT/'README.md').read_text()
    layout = text[text.index('## Layout'):]
    rows = [l.split('|')[1].strip().strip('`') for l in layout.splitlines() if l.startswith('| `')]
    nbs = sorted(p.stem for p in (ROOT/'nbs').rglob('*.ipynb') if p.stem != 'index' and not p.stem.startswith('_'))
    missing = [n for n in nbs if n not in rows and f'{n}.ipynb' not in rows]
    assert not missing, f"add these notebooks to the Layout table in nbs/index.ipynb: {missing}"
    assert rows[0] == '00a_tour'


def test_readme_spells_out_the_imagefolder_layout():
    text = (ROOT/'README.md').read_text()
    assert 'one sub-folder per class' in text and 'train/cat/' in text and 'val/cat/' in text


def test_every_relative_link_resolves():
    "README.md (links from the repository root) and each notebook (links from its own folder) point at files that exist."
    import json, re
    def dead(text, base):
        links = re.findall(r'!?\[[^\]]*\]\(([^)\s]+)\)', text)
        return [t for t in links if not re.match(r'(https?:|mailto:|#)', t) and not (base/t.split('#')[0]).exists()]
    bad = [('README.md', t) for t in dead((ROOT/'README.md').read_text(), ROOT)]
    for p in (ROOT/'nbs').rglob('*.ipynb'):
        if p.name == 'index.ipynb': continue          # rendered to README.md: its links are the README's
        for c in json.loads(p.read_text())['cells']:
            if c['cell_type'] == 'markdown': bad += [(p.name, t) for t in dead(''.join(c['source']), p.parent)]
    assert not bad, bad
