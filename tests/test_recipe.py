"""Config and recipe: DDP learning-rate scaling, the ViT recipe keys (label smoothing, gradient clipping, no decay on
the class token / position embedding), RandomResizedCrop's scale as a key with the reference default."""
import torch, torchvision
from torchvision import transforms as T

from astlab.config import load_config
from astlab.engine.data import train_transform
from astlab.engine.learner import Callback, CancelFitException
from astlab.lab.train import make_optimizer, scaled_lr, train


def test_scale_lr_is_a_key_and_off_by_default():
    c = load_config(None, ['training.lr=0.1', 'training.min_lr=0.01'], env_file=None)
    assert scaled_lr(c, 4) == (0.1, 0.01)                                   # the lr of the global batch, as given
    c = load_config(None, ['training.lr=0.1', 'training.min_lr=0.01', 'training.scale_lr=true'], env_file=None)
    assert scaled_lr(c, 4) == (0.4, 0.04) and scaled_lr(c, 1) == (0.1, 0.01)


def test_vit_preset_has_the_reference_recipe_keys_and_no_decay_on_embeddings():
    c = load_config('configs/imagenet_vitb16_ast.yaml', env_file=None)
    t = c.training
    assert (t.label_smoothing, t.grad_clip_norm, t.embedding_weight_decay, c.dataset.crop_scale_min) == (0.11, 1.0, 0.0, 0.08)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16)
    names = {id(p): n for n, p in vit.named_parameters()}
    wd = {names[id(p)]: g['weight_decay'] for g in make_optimizer(vit, c).param_groups for p in g['params']}
    assert wd['class_token'] == 0.0 and wd['encoder.pos_embedding'] == 0.0 and wd['conv_proj.weight'] == 0.05
    default = load_config(None, ['training.weight_decay=0.05'], env_file=None)   # None: decayed like any weight
    wd = {names[id(p)]: g['weight_decay'] for g in make_optimizer(vit, default).param_groups for p in g['params']}
    assert wd['class_token'] == 0.05


def test_crop_scale_is_a_key_with_the_reference_default():
    assert load_config(None, [], env_file=None).dataset.crop_scale_min == 0.08
    rrc = [t for t in train_transform(224).transforms if isinstance(t, T.RandomResizedCrop)]
    assert rrc[0].scale == (0.08, 1)
    assert [t for t in train_transform(224, 0.35).transforms if isinstance(t, T.RandomResizedCrop)][0].scale == (0.35, 1)
    assert load_config('configs/imagenet_resnet50_ast.yaml', env_file=None).dataset.crop_scale_min == 0.08


def test_label_smoothing_and_clipping_reach_the_learner(tmp_path):
    class Grab(Callback):
        def before_fit(self): self.ls, self.clip = self.learn.label_smoothing, self.learn.grad_clip_norm; raise CancelFitException()
    g = Grab()
    train(load_config(None, ['dataset.num_samples=64', 'model.name=resnet_tiny', 'training.epochs=1', 'training.device=cpu',
                             'training.label_smoothing=0.1', 'training.grad_clip_norm=2.0', 'training.progress=false',
                             f'logging.output_dir={tmp_path}'], env_file=None), log=lambda *a: None, extra_cbs=(g,))
    assert (g.ls, g.clip) == (0.1, 2.0)
