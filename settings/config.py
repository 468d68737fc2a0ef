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
    input_range: tuple[float, ...]
    label_format: str
    class_imbalance: float
    sample_weights: str | None
    image_size: tuple[int, ...]
    channels: int
    image_resize: str
    skip_bad_images: bool
    max_memory_gb: float
    shuffle_buffer: int
    test_split: float
    # Augmentation (training split only)
    augment_shift: float
    augment_rotation: float
    augment_scale: float
    augment_flip: bool
    augment_erase: float
    randaugment_layers: int
    randaugment_magnitude: float
    mixup_alpha: float
    cutmix_alpha: float
    mixup_chance: float | None
    cutmix_chance: float | None
    # Model
    model: str
    model_width: int
    model_depth: int
    dropout: float
    convs_per_stage: tuple[int, ...]
    fused_batchnorm: bool
    init_from: str
    pretrained: str
    freeze: str
    unfreeze_after_epochs: int
    backbone_lr_scale: float
    # Loss
    loss_weights: dict[str, float]
    label_smoothing: float
    focal_gamma: float
    class_weights: str | tuple[float, ...]
    # Optimization
    optimizer: str
    learning_rate: float
    momentum: float
    weight_decay: float
    clip_grad_norm: float
    batch_size: int
    accumulate_steps: int
    eval_batch_size: int
    epochs: int
    max_steps: int
    seed: int
    deterministic: bool
    jit_compile: bool
    mixed_precision: str
    steps_per_loop: int
    # Distribution
    strategy: str
    cpu_devices: int
    tpu: str
    data_service: str
    data_service_timeout: float
    ema_decay: float
    batchnorm_momentum: float
    precise_bn_batches: int
    # Learning-rate schedule
    lr_schedule: str
    warmup_steps: int
    lr_boundaries: tuple[int, ...]
    lr_values: tuple[float, ...]
    lr_decay_steps: int
    lr_decay_rate: float
    min_learning_rate: float
    onecycle_peak_fraction: float
    onecycle_initial_ratio: float
    onecycle_final_ratio: float
    plateau_metric: str
    plateau_factor: float
    plateau_patience: int
    # Stopping
    early_stopping_metric: str
    early_stopping_patience: int
    divergence_factor: float
    score_test: bool
    # Checks
    checks: str
    # Run directory, logging, checkpoints
    run_dir: str | None
    log_every_steps: int
    checkpoint_every_steps: int
    image_summary_every_steps: int
    histogram_every_steps: int
    profile_steps: tuple[int, ...]
    keep_checkpoints: int
    progress: str
