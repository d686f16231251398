__version__ = "0.1.0"

# Hand-maintained lines: nbdev-export rewrites only the version line above and keeps these.
#
# The layout, bottom to top (a module imports only from its own floor or below; tests/test_layout.py checks it):
#   config        settings, validation, secrets            astlab.config
#   core          the selection core, no Learner           astlab.core.{significance,controller,selection,distributed,api}
#   engine        the Learner and its callbacks            astlab.engine.{learner,data,models,meters,checkpoint,feedback,preflight}
#   methods       one module per method family             astlab.methods.{per_batch,stale,epoch_level,budget,rholoss}
#   lab           train + the CLIs, compare, verdict       astlab.lab.{train,experiment,analysis,compare,verdict,tune,imagenette,tensorboard}
#   integrations  Lightning, Kaggle, the Hub               astlab.integrations.{lightning,kaggle,hub}
import importlib, importlib.abc, importlib.util, sys

# The public API, imported on first use (PEP 562): `import astlab` stays light and the submodules' `import astlab` has no cycle.
_API = {'SparseStep': 'core.api', 'PrunedDataset': 'core.api'}
__all__ = list(_API)

def __getattr__(name):
    if name in _API: return getattr(importlib.import_module(f'.{_API[name]}', __name__), name)
    if name in MOVED: return importlib.import_module(f'.{name}', __name__)
    raise AttributeError(f"module 'astlab' has no attribute {name!r}")

# Where each module of the flat layout (astlab 0.1.0 before the sub-packages) lives now. `import astlab.train`,
# `from astlab.meters import history_rows`, old console-script shims and old checkpoints' pickled paths keep working:
# the old name is the same module object as the new one (not a copy), so patching one patches the other.
MOVED = {'significance': 'core.significance', 'controller': 'core.controller', 'selection': 'core.selection',
         'distributed': 'core.distributed', 'api': 'core.api',
         'learner': 'engine.learner', 'meters': 'engine.meters', 'data': 'engine.data', 'models': 'engine.models',
         'checkpoint': 'engine.checkpoint', 'feedback': 'engine.feedback', 'preflight': 'engine.preflight',
         'sparse': 'methods.per_batch', 'stale': 'methods.stale', 'epoch': 'methods.epoch_level',
         'budget': 'methods.budget', 'rholoss': 'methods.rholoss',
         'train': 'lab.train', 'experiment': 'lab.experiment', 'analysis': 'lab.analysis', 'compare': 'lab.compare',
         'verdict': 'lab.verdict', 'tune': 'lab.tune', 'imagenette': 'lab.imagenette',
         'kaggle': 'integrations.kaggle', 'hub': 'integrations.hub', 'integrations.tensorboard': 'lab.tensorboard'}

class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    "Imports `astlab.<old name>` as the module at its new path (registered under both names)."
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(f'{__name__}.') and fullname[len(__name__) + 1:] in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
    def create_module(self, spec):
        mod = importlib.import_module(f'{__name__}.{MOVED[spec.name[len(__name__) + 1:]]}')
        spec.loader_state = mod.__spec__           # importlib sets __spec__ on what we return: the real one goes back after
        return mod
    def exec_module(self, module): module.__spec__ = module.__spec__.loader_state

if not any(isinstance(f, _MovedFinder) for f in sys.meta_path): sys.meta_path.append(_MovedFinder())
