"""Every setting of a training run, declared once: name, type, default, bounds or choices, help and section.

The absl flags (settings/command_line.py) and the fields of TrainConfig (settings/config.py) are both
derived from SECTIONS; to add a setting, add one line here."""

import dataclasses

from settings.choices import (CHECK_LEVELS, DATASETS, EVAL_METRICS, LOSS_TERMS, LR_SCHEDULES, OPTIMIZERS,
                              STRATEGIES)
from settings.parsers import CLASS_WEIGHTS, FLOAT_LIST, INTEGER_LIST, LOSS_WEIGHTS


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting. `kind` is bool, int, float or str, or a parser of settings/parsers.py; a default of
    None means "unset" (the config field then takes None too, or is resolved from other settings)."""

    name: str
    kind: object
    default: object
    help: str
    choices: tuple[str, ...] = ()
    lower: float | None = None
    upper: float | None = None

    @property
    def value_type(self):
        """The type of the resolved value, as TrainConfig's field declares it."""
        value_type = getattr(self.kind, "value_type", self.kind)
        return value_type | None if self.default is None else value_type

    @property
    def resolved_default(self):
        """The default as a run's config holds it (a list setting's "" is the empty tuple)."""
        parse = getattr(self.kind, "parse", None)
        return parse(self.default) if parse and self.default is not None else self.default


@dataclasses.dataclass(frozen=True)
class Section:
    """Settings about one part of a run; `--helpfull` lists them under its title."""

    title: str
    settings: tuple[Setting, ...]


SECTIONS = (
    Section("data", (
        Setting("dataset", str, "fashion_mnist", "Dataset: fashion_mnist, mnist and cifar10 from the catalog; "
                "image_folder (--data_dir/<class>/<image>, or train/ and test/ each with class folders), npz (the "
                "one .npz file in --data_dir, with x_train, y_train, x_test, y_test) or tfrecord (the shards "
                "scripts/make_shards.py wrote into --data_dir, streamed: for data larger than memory) for your "
                "own; synthetic (generated, for tests).", choices=DATASETS),
        Setting("data_dir", str, None, "Folder holding the dataset's files. If set, the only place looked in; "
                "otherwise $TAPELOOP_DATA_DIR/<dataset>, Keras' cache, /usr/share/datasets and the download cache "
                "are searched."),
        Setting("download", bool, True, "Download (and verify) the dataset if it is not found."),
        Setting("validation_split", float, 0.1, "Fraction of the training split held out for evaluation during "
                "training, chosen by --seed.", lower=0.0, upper=0.5),
        Setting("standardize", bool, None, "Subtract the dataset's mean pixel and divide by its std after scaling "
                "to [0, 1]. Default: on, except for the keras.applications backbones (models/applications.py), "
                "which take [0, 1] pixels and normalize them inside as their ImageNet training did."),
        Setting("input_range", FLOAT_LIST, "0,1", "LOW,HIGH: the range of float pixel values as stored (uint8 "
                "images are always 0,255); the pipeline maps it to [0, 1]."),
        Setting("label_format", str, "sparse", "Labels as the pipeline hands them to the loss: integer class ids, "
                "or one-hot rows.", choices=('sparse', 'one_hot')),
        Setting("class_imbalance", float, 1.0, "Long-tail subsampling of the training split: class c keeps "
                "ratio^(-c/(k-1)) of its examples (class 0 all, the last 1/ratio), chosen with a fixed seed so "
                "every run sees the same subset; 1 keeps everything.", lower=1.0),
        Setting("image_size", INTEGER_LIST, "", "image_folder, tfrecord: the size every image is brought to, S or "
                "H,W."),
        Setting("channels", int, 3, "image_folder, tfrecord: 1 (grayscale) or 3 (RGB); images are converted as "
                "needed."),
        Setting("image_resize", str, "pad", "image_folder, tfrecord: keep each image's aspect ratio by padding it "
                "with black (pad) or by cropping its centre (crop).", choices=('pad', 'crop')),
        Setting("skip_bad_images", bool, False, "image_folder, tfrecord: leave out (and list) files that cannot "
                "be decoded or brought to --image_size, and damaged shards, instead of stopping."),
        Setting("max_memory_gb", float, 0.0, "image_folder: stream the images from their files (decoded as "
                "training goes, as --dataset=tfrecord does) when decoded they would take more than this; 0: a "
                "sixteenth of this machine's memory (held in memory, they peak at about five copies).", lower=0.0),
        Setting("shuffle_buffer", int, 0, "tfrecord: records in the training shuffle buffer (beside interleaving "
                "4 shards in an order drawn per epoch); 0: as many as 128 MiB of encoded images hold, at most "
                "10,000.", lower=0),
        Setting("test_split", float, 0.2, "image_folder without train/ and test/: the fraction of the images held "
                "out as the test split (fixed, whatever the --seed).", lower=0.01, upper=0.9),
        Setting("sample_weights", str, None, "A .npy file of one non-negative weight per example of the dataset's "
                "training split, in stored order; multiplies the class weights."),
    )),
    Section("augmentation", (
        Setting("augment_shift", float, 0.0, "Random translation of each training image by up to this fraction of "
                "its height and width.", lower=0.0, upper=0.5),
        Setting("augment_rotation", float, 0.0, "Random rotation of each training image by up to this many "
                "degrees either way.", lower=0.0, upper=180.0),
        Setting("augment_scale", float, 0.0, "Random zoom of each training image by a factor in [1 - s, 1 + s].",
                lower=0.0, upper=0.5),
        Setting("augment_flip", bool, False, "Mirror half the training images left to right; refused for datasets "
                "whose classes a mirror can change (digits)."),
        Setting("augment_erase", float, 0.0, "Probability of random erasing (cutout): a random rectangle of 2-25% "
                "of the image set to the mean pixel.", lower=0.0, upper=1.0),
        Setting("randaugment_layers", int, 0, "RandAugment: operations applied to each training image, each drawn "
                "at random from rotate, shear, translate, auto-contrast, equalize, solarize, posterize, contrast, "
                "brightness, sharpness (and color for RGB) (0: off; the paper's N).", lower=0, upper=10),
        Setting("randaugment_magnitude", float, 9.0, "RandAugment: the strength of every operation, 0-10 (the "
                "paper's M; at 10: 30 degrees, shear 0.3, 45% shifts, 4-bit posterize, factors 1 +/- 0.9).",
                lower=0.0, upper=10.0),
        Setting("mixup_alpha", float, 0.0, "MixUp: blend each training example with another of its batch, images "
                "and targets, by lam ~ Beta(alpha, alpha) (0: off; 0.2-0.4 is usual).", lower=0.0),
        Setting("cutmix_alpha", float, 0.0, "CutMix: paste a box of another example of the batch into each "
                "training image, targets mixed by area, lam ~ Beta(alpha, alpha) (0: off; 1.0 is usual).",
                lower=0.0),
        Setting("mixup_chance", float, None, "The chance that a training example gets MixUp (default: 1, or 0.5 "
                "with --cutmix_alpha too).", lower=0.0, upper=1.0),
        Setting("cutmix_chance", float, None, "The chance that a training example gets CutMix (default: 1, or 0.5 "
                "with --mixup_alpha too); with both, the chances sum to at most 1.", lower=0.0, upper=1.0),
    )),
    Section("model", (
        Setting("model", str, "cnn", "Model from models/registry.py: cnn, lean_cnn (one conv block a stage: about "
                "a quarter of cnn's FLOPs), mlp or resnet (pre-activation, for small images), or a name you added "
                "to models.registry.BUILDERS."),
        Setting("model_width", int, 32, "Filters of the first conv stage (cnn, resnet: 16 is the paper's) or "
                "hidden units (mlp).", lower=1),
        Setting("model_depth", int, 2, "Conv stages (cnn: each halves the resolution and doubles the filters), "
                "hidden layers (mlp), or layers with weights (resnet: 6n + 2, e.g. 20, 32, 56).", lower=1),
        Setting("dropout", float, 0.3, "Dropout rate before the classifier head.", lower=0.0, upper=0.95),
        Setting("convs_per_stage", INTEGER_LIST, "", "cnn: conv blocks in each stage, one number for every stage "
                "or one a stage (--model_depth of them), e.g. 1,2,2,2: a first stage of one convolution, whose "
                "second one at full resolution costs the most and adds the least (empty: 2 a stage; lean_cnn is 1 "
                "a stage)."),
        Setting("filters_per_stage", INTEGER_LIST, "", "cnn, lean_cnn: filters of each conv stage, one number for "
                "every stage or one a stage, e.g. 24,32 (empty: --model_width, doubling at each stage)."),
        Setting("kernel_sizes", INTEGER_LIST, "", "cnn, lean_cnn: the convolutions' kernel side in each stage, "
                "one number for every stage or one a stage, e.g. 5,3 (empty: 3)."),
        Setting("conv_padding", str, "same", "cnn, lean_cnn: same (zero borders keep the size) or valid (no "
                "borders: a convolution takes kernel side - 1 pixels off each image side, as in LeNet).",
                choices=("same", "valid")),
        Setting("batchnorm", bool, True, "cnn, lean_cnn: batch norm after each convolution (--nobatchnorm: "
                "convolutions with biases instead)."),
        Setting("pool_first", bool, False, "cnn, lean_cnn: max-pool a stage's last convolution before its batch "
                "norm and ReLU (a quarter of the activations to normalize and rectify; without batch norm the "
                "same function, since max-pooling and ReLU commute)."),
        Setting("dense_units", int, 0, "cnn, lean_cnn: a hidden dense layer of this many units, with ReLU, "
                "between the flattened features and the dropout before the head (0: none).", lower=0),
        Setting("fused_batchnorm", bool, False, "cnn, lean_cnn, resnet: batch norm by TensorFlow's fused kernel "
                "in training (models/fused_batchnorm.py): the same computation as Keras' layer up to rounding, "
                "1.2-1.4x faster training for the cnn on a CPU. Off by default because every recipe's published "
                "numbers and pinned losses were measured with Keras' layer."),
        Setting("batchnorm_momentum", float, 0.0, "Momentum of the batch-norm moving statistics (0: from the "
                "run's length, averaging over at most an epoch's steps and a fifth of the run's, between "
                "PyTorch's 0.9 (10 steps) and Keras' 0.99 (100 steps); Keras' fixed 0.99 lags the weights in "
                "short runs and runs of few steps an epoch).", lower=0.0, upper=0.9999),
        Setting("precise_bn_batches", int, 0, "Precise batch norm: before every evaluation and the export, "
                "re-estimate each batch-norm layer's statistics on this many --batch_size batches of "
                "(unaugmented) training images with the weights fixed, instead of the moving averages, which lag "
                "the weights in short runs (0: off; pycls and mmpretrain use 8,192 images, 64 batches of 128).",
                lower=0),
        Setting("init_from", str, "", "Warm start: RUN_DIR of another tapeloop run, optionally :best or :final "
                "(default: the weights its train.py scored). Variables that match this model's by place and shape "
                "are loaded; the others (a head for another class count) keep their initialization. A resumed run "
                "continues from its own checkpoint."),
        Setting("pretrained", str, "none", "keras.applications backbones: none (random initialization), imagenet "
                "(Keras downloads and checks the weights) or PATH, a Keras weights file (.weights.h5 or .h5) of "
                "the backbone without its top."),
        Setting("freeze", str, "none", "backbone: train only the head (the model's last layer); frozen layers "
                "keep batch norm in inference mode and get no weight decay or optimizer slots.",
                choices=('none', 'backbone')),
        Setting("unfreeze_after_epochs", int, 0, "With --freeze=backbone: train the whole model from this epoch "
                "on, the backbone at --backbone_lr_scale of the rate (0: stay frozen).", lower=0),
        Setting("backbone_lr_scale", float, 0.1, "After --unfreeze_after_epochs: the backbone's learning rate as "
                "a fraction of the head's (the schedule's).", lower=0.0, upper=1.0),
    )),
    Section("loss", (
        Setting("loss_weights", LOSS_WEIGHTS, "cross_entropy=1.0", "The loss: term=weight pairs, summed. Terms: "
                f"{', '.join(LOSS_TERMS)} (l2: half the sum of squared kernels)."),
        Setting("label_smoothing", float, 0.0, "Label smoothing for cross_entropy: targets become (1 - s) * "
                "one_hot + s / num_classes.", lower=0.0, upper=0.5),
        Setting("focal_gamma", float, 2.0, "Focusing exponent of the focal term.", lower=0.0),
        Setting("class_weights", CLASS_WEIGHTS, "none", "Per-class weights of the training loss: none, balanced "
                "(n / (k * count_c) from the training labels) or w0,w1,...; scaled so the mean example weight is "
                "1. Evaluation losses are never weighted."),
    )),
    Section("optimization", (
        Setting("optimizer", str, "adam", "Optimizer.", choices=OPTIMIZERS),
        Setting("learning_rate", float, 0.001, "Learning rate.", lower=1e-12),
        Setting("momentum", float, 0.9, "Momentum for sgd.", lower=0.0, upper=1.0),
        Setting("adam_beta1", float, 0.9, "adam, adamw: decay of the gradient's moving average (first moment).",
                lower=0.0, upper=0.9999),
        Setting("adam_beta2", float, 0.999, "adam, adamw: decay of the squared gradient's moving average "
                "(second moment).", lower=0.0, upper=0.99999),
        Setting("weight_decay", float, 0.0001, "Decoupled weight decay for adamw and sgd (kernels only: biases "
                "and normalization parameters are spared); adam has none.", lower=0.0),
        Setting("clip_grad_norm", float, 0.0, "Clip the gradients to this global norm (0: no clipping). "
                "gradients/global_norm logs the norm before clipping.", lower=0.0),
        Setting("batch_size", int, 128, "Training batch size (of each micro-batch under --accumulate_steps).",
                lower=1),
        Setting("accumulate_steps", int, 1, "Gradient accumulation: micro-batches of --batch_size whose gradients "
                "are summed before one update, which so sees N x --batch_size examples with the activations of "
                "one micro-batch in memory. Steps (the schedule, --max_steps, checkpoints, resume) count updates.",
                lower=1),
        Setting("epochs", int, 10, "Passes over the training split.", lower=1),
        Setting("max_steps", int, 0, "Step budget; stops earlier than --epochs if reached (0: no budget).",
                lower=0),
        Setting("ema_decay", float, 0.0, "Keep an exponential moving average of the weights with this decay (e.g. "
                "0.999) and use it for evaluation, best/ and the export (0: off).", lower=0.0, upper=0.99999),
        Setting("seed", int, 0, "Seed for the validation split, shuffling and initialization."),
    )),
    Section("schedule", (
        Setting("lr_schedule", str, "constant", "Learning-rate schedule, a function of the global step: constant; "
                "step (--lr_boundaries, --lr_values); exponential (--lr_decay_rate every --lr_decay_steps); "
                "cosine (to --min_learning_rate over --lr_decay_steps); onecycle (--onecycle_*); plateau "
                "(--plateau_*).", choices=LR_SCHEDULES),
        Setting("warmup_steps", int, 0, "Linear warm-up in front of the schedule: step s < W trains at (s + 1) / "
                "W of the rate at step W.", lower=0),
        Setting("lr_boundaries", INTEGER_LIST, "", "step: the steps after which the rate moves to the next of "
                "--lr_values (Keras PiecewiseConstantDecay)."),
        Setting("lr_values", FLOAT_LIST, "", "step: the rates, one more than --lr_boundaries; they replace "
                "--learning_rate."),
        Setting("lr_decay_steps", int, 0, "exponential: steps per factor of --lr_decay_rate (0: one epoch); "
                "cosine: steps from the end of warm-up to --min_learning_rate (0: to the end of training).",
                lower=0),
        Setting("lr_decay_rate", float, 0.5, "exponential: factor per --lr_decay_steps.", lower=1e-06, upper=1.0),
        Setting("min_learning_rate", float, 0.0, "Floor of exponential and plateau; end point of cosine.",
                lower=0.0),
        Setting("onecycle_peak_fraction", float, 0.3, "onecycle: share of the steps spent rising to "
                "--learning_rate.", lower=0.01, upper=0.99),
        Setting("onecycle_initial_ratio", float, 0.04, "onecycle: the first rate, as a fraction of "
                "--learning_rate.", lower=0.0, upper=1.0),
        Setting("onecycle_final_ratio", float, 0.0001, "onecycle: the last rate, as a fraction of "
                "--learning_rate.", lower=0.0, upper=1.0),
        Setting("plateau_metric", str, "loss", "plateau: the validation metric watched.", choices=EVAL_METRICS),
        Setting("plateau_factor", float, 0.2, "plateau: multiplies the rate when the metric stalls.",
                lower=1e-06, upper=0.999),
        Setting("plateau_patience", int, 2, "plateau: evaluations without improvement before the rate is lowered.",
                lower=1),
    )),
    Section("stopping", (
        Setting("early_stopping_metric", str, "accuracy", "The validation metric that defines the best weights "
                "(RUN/best, the export) and early stopping; a tie on an accuracy goes to the lower validation "
                "loss (early stopping counts from the last gain in the metric itself).", choices=EVAL_METRICS),
        Setting("early_stopping_patience", int, 0, "Stop after this many evaluations without a new best "
                "--early_stopping_metric (0: never stop early).", lower=0),
        Setting("divergence_factor", float, 10.0, "Stop with an error when the logged training loss is NaN or "
                "Inf, or exceeds both this multiple of its running minimum and the first step's loss (0: only NaN "
                "and Inf).", lower=0.0),
        Setting("score_test", bool, True, 'Score the final weights on the test split (results.json "test"); '
                "tune.py turns it off for its trials, so that a search never sees the test split."),
    )),
    Section("checks", (
        Setting("checks", str, "standard", "In-graph guards between the stages: off; standard (batch dtype, shape "
                "and range, labels, finite logits, loss and gradient norm); full (also every gradient and every "
                "variable after the update).", choices=CHECK_LEVELS),
    )),
    Section("speed", (
        Setting("eval_batch_size", int, 1000, "Evaluation batch size.", lower=1),
        Setting("steps_per_loop", int, 1, "Train steps per tf.function call (a tf.while_loop over the batches); "
                "logs and checkpoints fall on loop boundaries.", lower=1),
        Setting("mixed_precision", str, "auto", "Compute in 16-bit floats with float32 variables, logits and "
                "loss; float16 adds dynamic loss scaling. auto: bfloat16 where the hardware runs it natively "
                "(CPUs with AVX512_BF16 or AMX, as oneDNN sees them under ONEDNN_MAX_CPU_ISA; GPUs of compute "
                "capability 8.0+; TPUs), float32 (none) elsewhere; the run logs its choice and results.json "
                "records it. bfloat16 on other hardware is emulated, several times slower than float32.",
                choices=('auto', 'none', 'bfloat16', 'float16')),
        Setting("jit_compile", bool, False, "XLA-compile the train step (2.4x slower for the cnn on the 2-core "
                "CPU tapeloop is developed on; try it on GPUs)."),
        Setting("deterministic", bool, False, "Deterministic kernels "
                "(tf.config.experimental.enable_op_determinism), so that reruns with the same flags log identical "
                "losses; slower on GPUs."),
    )),
    Section("distribution", (
        Setting("strategy", str, "default", "tf.distribute strategy: default (one device, no distribution); "
                "one_device; mirrored (every local GPU, else every --cpu_devices CPU); multi_worker (the machines "
                "in TF_CONFIG); tpu (--tpu). --batch_size is the global batch, split evenly over the replicas.",
                choices=STRATEGIES),
        Setting("cpu_devices", int, 1, "Split the CPU into this many logical devices, so that --strategy=mirrored "
                "can be tried and tested without GPUs.", lower=1),
        Setting("tpu", str, "", "--strategy=tpu: the TPU's name or grpc:// address (empty: the TPU VM this runs "
                "on)."),
        Setting("data_service", str, "", "grpc://HOST:PORT of a tf.data service dispatcher "
                "(scripts/data_service.py): training batches are built whole, each exactly as here, by its "
                "workers, which must reach --data_dir at the same path; they arrive in the order the workers "
                "finish them, so a run is not bit-reproducible (each epoch still holds each of its batches once). "
                "Arrays and image folders (also streamed); not tfrecord."),
        Setting("data_service_timeout", float, 30.0, "Seconds to wait for the --data_service dispatcher and a "
                "worker to serve a first batch before stopping with the paragraph.", lower=1.0),
        Setting("data_service_worker_wait", float, 300.0, "Seconds training waits, after --data_service_timeout, "
                "for a tf.data service worker that stopped while it held batches of the epoch to come back at its "
                "--worker_address (TensorFlow's service waits for it; the other workers do not take over) before "
                "stopping with the paragraph; the run keeps its last checkpoint.", lower=1.0),
    )),
    Section("run directory", (
        Setting("run_dir", str, None, "Run directory: logs, checkpoints, exported model, results. Rerunning on a "
                "directory with checkpoints resumes."),
        Setting("log_every_steps", int, 100, "Steps between logged training scalars.", lower=1),
        Setting("checkpoint_every_steps", int, 0, "Steps between extra checkpoints within an epoch (0: only at "
                "the end of each epoch).", lower=0),
        Setting("image_summary_every_steps", int, 0, "Steps between grids of the training batch about to be "
                "trained on, with labels (0: the first batch only).", lower=0),
        Setting("histogram_every_steps", int, 0, "Steps between histograms of every weight and of its gradient at "
                "that step (0: none).", lower=0),
        Setting("profile_steps", INTEGER_LIST, "", "START,STOP: capture a TensorFlow profiler trace of those "
                "steps into the run directory (TensorBoard's Profile tab)."),
        Setting("keep_checkpoints", int, 3, "Latest checkpoints kept in RUN/checkpoints.", lower=1),
        Setting("progress", str, "auto", "Progress display: a bar on a terminal, one log line per "
                "--log_every_steps otherwise.", choices=('auto', 'bar', 'log')),
    )),
)
SETTINGS = tuple(setting for section in SECTIONS for setting in section.settings)
