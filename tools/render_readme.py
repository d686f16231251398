"""Render README.md from nbs/index.ipynb (Quarto, and so `nbdev-readme`, is not available here).

Markdown cells are copied verbatim; code cells become ```python blocks with nbdev `#|` directive lines removed;
cells marked `#| hide` are left out. `python tools/render_readme.py` writes README.md; `--check` exits 1 if it differs."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by `make readme` (tools/render_readme.py). Edit the notebook, not this file. -->\n\n"

def render(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb['cells']:
        src = ''.join(c['source']).strip('\n')
        if c['cell_type'] == 'markdown': out.append(src)
        elif c['cell_type'] == 'code':
            lines = src.split('\n')
            if any(l.strip().replace(' ', '') in ('#|hide',) for l in lines): continue
            code = '\n'.join(l for l in lines if not l.lstrip().startswith('#|')).strip('\n')
            if code: out.append(f"```python\n{code}\n```")
    return HEADER + '\n\n'.join(out) + '\n'

if __name__ == '__main__':
    text, dest = render(), ROOT/'README.md'
    if '--check' in sys.argv: sys.exit(0 if dest.exists() and dest.read_text() == text else 1)
    dest.write_text(text); print(f"wrote {dest}")
