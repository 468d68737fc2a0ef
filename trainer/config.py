"""TrainConfig: the resolved settings of one run. Library code reads this, never FLAGS."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One field per tapeloop flag, same name; defaults live with the flags (trainer/flags.py)."""

    # Data
    dataset: str
    data_dir: str | None
    download: bool
    validation_split: float
    standardize: bool
    # Model
    model: str
    model_width: int
    dropout: float
    # Optimization
    optimizer: str
    learning_rate: float
    momentum: float
    weight_decay: float
    batch_size: int
    eval_batch_size: int
    epochs: int
    max_steps: int
    seed: int
    jit_compile: bool
    # Run directory, logging, checkpoints
    run_dir: str | None
    log_every_steps: int
    checkpoint_every_steps: int
    keep_checkpoints: int
    progress: str
