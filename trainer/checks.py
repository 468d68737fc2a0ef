"""Guards on the stages of training; each failure is a TapeloopError that says how to fix it."""

import math

from trainer.errors import TapeloopError


class DivergenceGuard:
    """Stops a run whose training loss turned NaN or Inf, or blew up.

    "Blew up" means above `factor` times the lowest loss seen so far and above
    the first step's loss: healthy runs fluctuate near their minimum, but do
    not climb back past where they started. `factor=0` checks finiteness only.
    """

    def __init__(self, factor: float):
        self.factor = factor
        self.first_loss = None
        self.lowest_loss = math.inf

    def check(self, step: int, loss: float, learning_rate: float) -> None:
        """Raises if `loss` (the training loss logged at `step`) shows divergence."""
        if not math.isfinite(loss):
            raise self._diverged(step, loss, learning_rate, f"the loss became {loss}")
        if self.first_loss is None:
            self.first_loss = loss
        blew_up = self.factor and loss > self.factor * self.lowest_loss and loss > self.first_loss
        if blew_up:
            raise self._diverged(step, loss, learning_rate,
                                 f"the loss grew to {loss:.4g}, over {self.factor:g}x its lowest value "
                                 f"({self.lowest_loss:.4g}) and above its first ({self.first_loss:.4g})")
        self.lowest_loss = min(self.lowest_loss, loss)

    @staticmethod
    def _diverged(step: int, loss: float, learning_rate: float, what: str) -> TapeloopError:
        return TapeloopError(
            stage="loss", problem=f"training diverged by step {step}: {what}",
            expected="a finite training loss that stays near its running minimum",
            found=f"loss {loss:.4g} at step {step}, with learning rate {learning_rate:.4g}",
            fix=f"lower --learning_rate (try {learning_rate / 10:.2g}), add --warmup_steps (e.g. one "
                "epoch of steps) or --clip_grad_norm=1.0; the run directory keeps its last good "
                "checkpoint, so use a new --run_dir or rerun with the fixed flags")
