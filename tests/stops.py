"""A test helper shared by the resume tests: stop a fit mid-epoch the way the wall-clock cap or a signal does."""
from astlab.engine.learner import Callback, CancelFitException


class StopAt(Callback):
    "Interrupt the fit after batch `it` of epoch `epoch`, the way the wall-clock cap or a signal does."
    order = 70
    def __init__(self, epoch, it): self.at = (epoch, it)
    def after_batch(self):
        if (self.learn.epoch, self.learn.iter) == self.at:
            self.learn.stop_reason = 'test_stop'; raise CancelFitException()
