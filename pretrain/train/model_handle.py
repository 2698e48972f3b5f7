"""What objectives receive as `model`: calling it runs the (possibly DDP-wrapped) forward, its attributes (config,
logits, lm_loss, encode, decode) are the Transformer's, and `own` is the objective's own module as the trainer
prepared it. The one place the toolkit unwraps data-parallel wrappers for objectives."""


class ModelHandle:
    def __init__(self, wrapped, module, own=None):
        self._wrapped, self._module, self.own = wrapped, module, own

    def __call__(self, *args, **kwargs):
        return self._wrapped(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._module, name)
