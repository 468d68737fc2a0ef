"""Every tapeloop flag with its default and validator, and flags -> TrainConfig."""

import dataclasses
import math
import re

from absl import flags

from data.catalog import CATALOG, USER_DATASETS
from models.registry import PRETRAINED
from settings.config import TrainConfig
from trainer.losses import TERMS as LOSS_TERMS


DATASETS = (*CATALOG, *USER_DATASETS)
CHECK_LEVELS = ("off", "standard", "full")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle", "plateau")
EVAL_METRICS = ("accuracy", "balanced_accuracy", "loss")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


class LossWeightsParser(flags.ArgumentParser):
    """`cross_entropy=1.0,l2=5e-4` -> {"cross_entropy": 1.0, "l2": 0.0005}."""

    def parse(self, argument):
        if isinstance(argument, dict):
            return argument
        weights = {}
        for item in filter(None, (part.strip() for part in argument.split(","))):
            term, equals, value = item.partition("=")
            if term not in LOSS_TERMS:
                raise ValueError(f"unknown loss term {term!r}; terms: {', '.join(LOSS_TERMS)}")
            if not equals:
                raise ValueError(f"give {term} a weight: {term}=<weight>")
            try:
                weights[term] = float(value)
            except ValueError:
                raise ValueError(f"the weight of {term} is not a number: {value!r}") from None
            if not weights[term] >= 0:
                raise ValueError(f"the weight of {term} must be a number >= 0, not {value!r}")
            if not math.isfinite(weights[term]):
                raise ValueError(f"the weight of {term} must be finite, not {value!r}")
        if not any(term != "l2" for term in weights):
            raise ValueError("name at least one of the data terms "
                             f"({', '.join(LOSS_TERMS[:-1])}), e.g. cross_entropy=1.0")
        return weights

    def flag_type(self):
        return "term=weight list"


class LossWeightsSerializer(flags.ArgumentSerializer):
    def serialize(self, value):
        return ",".join(f"{term}={weight!r}" for term, weight in value.items())


class NumberListParser(flags.ArgumentParser):
    """`1000,2000` -> (1000, 2000) with numbers of one type; an empty string is the empty list."""

    def __init__(self, number_type: type):
        self.number_type = number_type

    def parse(self, argument):
        if not isinstance(argument, str):
            return tuple(argument)
        try:
            numbers = tuple(self.number_type(part) for part in argument.split(",") if part.strip())
        except ValueError:
            raise ValueError(f"expected comma-separated {self.number_type.__name__}s, not {argument!r}") from None
        if not all(math.isfinite(number) for number in numbers):
            raise ValueError(f"expected finite numbers, not {argument!r}")
        return numbers

    def flag_type(self):
        return f"list of {self.number_type.__name__}s"


class ClassWeightsParser(flags.ArgumentParser):
    """`none`, `balanced`, or one non-negative weight per class, comma-separated."""

    def parse(self, argument):
        if not isinstance(argument, str) or argument in ("none", "balanced"):
            return argument
        try:
            weights = tuple(float(part) for part in argument.split(","))
        except ValueError:
            raise ValueError(f"expected none, balanced or comma-separated numbers, not {argument!r}") from None
        if not all(weight >= 0 for weight in weights) or not any(weights):
            raise ValueError(f"class weights must be >= 0 and not all 0, not {argument!r}")
        if not all(map(math.isfinite, weights)):
            raise ValueError(f"class weights must be finite, not {argument!r}")
        return weights

    def flag_type(self):
        return "none|balanced|w0,w1,..."


class ClassWeightsSerializer(flags.ArgumentSerializer):
    def serialize(self, value):
        return value if isinstance(value, str) else ",".join(map(repr, value))


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines tapeloop's flags on `flag_values` (the global FLAGS by default)."""
    fv = {"flag_values": flag_values}
    # Data
    flags.DEFINE_enum("dataset", "fashion_mnist", DATASETS, "Dataset: fashion_mnist, mnist and cifar10 from "
                      "the catalog; image_folder (--data_dir/<class>/<image>, or train/ and test/ each "
                      "with class folders), npz (the one .npz file in --data_dir, with x_train, y_train, "
                      "x_test, y_test) or tfrecord (the shards scripts/make_shards.py wrote into --data_dir, "
                      "streamed: for data larger than memory) for your own; synthetic (generated, for tests).", **fv)
    flags.DEFINE_string("data_dir", None, "Folder holding the dataset's files. If set, the only "
                        "place looked in; otherwise $TAPELOOP_DATA_DIR/<dataset>, Keras' cache, "
                        "/usr/share/datasets and the download cache are searched.", **fv)
    flags.DEFINE_boolean("download", True, "Download (and verify) the dataset if it is not found.", **fv)
    flags.DEFINE_float("validation_split", 0.1, "Fraction of the training split held out for "
                       "evaluation during training, chosen by --seed.", lower_bound=0.0, upper_bound=0.5, **fv)
    flags.DEFINE_boolean("standardize", None, "Subtract the dataset's mean pixel and divide by its std "
                         "after scaling to [0, 1]. Default: on, except for the keras.applications backbones "
                         "(models/applications.py), which take [0, 1] pixels and normalize them inside as "
                         "their ImageNet training did.", **fv)
    flags.DEFINE(NumberListParser(float), "input_range", "0,1", "LOW,HIGH: the range of float pixel "
                 "values as stored (uint8 images are always 0,255); the pipeline maps it to [0, 1].",
                 serializer=flags.CsvListSerializer(","), **fv)
    flags.DEFINE_enum("label_format", "sparse", ("sparse", "one_hot"), "Labels as the pipeline hands them "
                      "to the loss: integer class ids, or one-hot rows.", **fv)
    flags.DEFINE_float("class_imbalance", 1.0, "Long-tail subsampling of the training split: class c "
                       "keeps ratio^(-c/(k-1)) of its examples (class 0 all, the last 1/ratio), chosen "
                       "with a fixed seed so every run sees the same subset; 1 keeps everything.",
                       lower_bound=1.0, **fv)
    flags.DEFINE(NumberListParser(int), "image_size", "", "image_folder, tfrecord: the size every image is brought "
                 "to, S or H,W.", serializer=flags.CsvListSerializer(","), **fv)
    flags.DEFINE_integer("channels", 3, "image_folder, tfrecord: 1 (grayscale) or 3 (RGB); images are converted "
                         "as needed.", **fv)
    flags.DEFINE_enum("image_resize", "pad", ("pad", "crop"), "image_folder, tfrecord: keep each image's aspect "
                      "ratio by padding it with black (pad) or by cropping its centre (crop).", **fv)
    flags.DEFINE_boolean("skip_bad_images", False, "image_folder, tfrecord: leave out (and list) files that "
                         "cannot be decoded or brought to --image_size, and damaged shards, instead of stopping.", **fv)
    flags.DEFINE_float("max_memory_gb", 0.0, "image_folder: stream the images from their files (decoded as "
                       "training goes, as --dataset=tfrecord does) when decoded they would take more than this; 0: a "
                       "sixteenth of this machine's memory (held in memory, they peak at about five copies).",
                       lower_bound=0.0, **fv)
    flags.DEFINE_integer("shuffle_buffer", 0, "tfrecord: records in the training shuffle buffer (beside "
                         "interleaving 4 shards in an order drawn per epoch); 0: as many as 128 MiB of "
                         "encoded images hold, at most 10,000.", lower_bound=0, **fv)
    flags.DEFINE_float("test_split", 0.2, "image_folder without train/ and test/: the fraction of the "
                       "images held out as the test split (fixed, whatever the --seed).",
                       lower_bound=0.01, upper_bound=0.9, **fv)
    flags.DEFINE_string("sample_weights", None, "A .npy file of one non-negative weight per example of "
                        "the dataset's training split, in stored order; multiplies the class weights.", **fv)
    # Augmentation (training split only; evaluation never sees it)
    flags.DEFINE_float("augment_shift", 0.0, "Random translation of each training image by up to this "
                       "fraction of its height and width.", lower_bound=0.0, upper_bound=0.5, **fv)
    flags.DEFINE_float("augment_rotation", 0.0, "Random rotation of each training image by up to this "
                       "many degrees either way.", lower_bound=0.0, upper_bound=180.0, **fv)
    flags.DEFINE_float("augment_scale", 0.0, "Random zoom of each training image by a factor in "
                       "[1 - s, 1 + s].", lower_bound=0.0, upper_bound=0.5, **fv)
    flags.DEFINE_boolean("augment_flip", False, "Mirror half the training images left to right; refused "
                         "for datasets whose classes a mirror can change (digits).", **fv)
    flags.DEFINE_float("augment_erase", 0.0, "Probability of random erasing (cutout): a random rectangle "
                       "of 2-25% of the image set to the mean pixel.", lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_integer("randaugment_layers", 0, "RandAugment: operations applied to each training image, "
                         "each drawn at random from rotate, shear, translate, auto-contrast, equalize, solarize, "
                         "posterize, contrast, brightness, sharpness (and color for RGB) (0: off; the paper's N).",
                         lower_bound=0, upper_bound=10, **fv)
    flags.DEFINE_float("randaugment_magnitude", 9.0, "RandAugment: the strength of every operation, 0-10 (the "
                       "paper's M; at 10: 30 degrees, shear 0.3, 45% shifts, 4-bit posterize, factors 1 +/- 0.9).",
                       lower_bound=0.0, upper_bound=10.0, **fv)
    flags.DEFINE_float("mixup_alpha", 0.0, "MixUp: blend each training example with another of its batch, "
                       "images and targets, by lam ~ Beta(alpha, alpha) (0: off; 0.2-0.4 is usual).",
                       lower_bound=0.0, **fv)
    flags.DEFINE_float("cutmix_alpha", 0.0, "CutMix: paste a box of another example of the batch into each "
                       "training image, targets mixed by area, lam ~ Beta(alpha, alpha) (0: off; 1.0 is usual).",
                       lower_bound=0.0, **fv)
    flags.DEFINE_float("mixup_chance", None, "The chance that a training example gets MixUp (default: 1, or "
                       "0.5 with --cutmix_alpha too).", lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_float("cutmix_chance", None, "The chance that a training example gets CutMix (default: 1, or "
                       "0.5 with --mixup_alpha too); with both, the chances sum to at most 1.",
                       lower_bound=0.0, upper_bound=1.0, **fv)
    # Model
    flags.DEFINE_string("model", "cnn", "Model from models/registry.py: cnn, lean_cnn (one conv block a stage: "
                        "about a quarter of cnn's FLOPs), mlp or resnet (pre-activation, for small images), or a "
                        "name you added to models.registry.BUILDERS.", **fv)
    flags.DEFINE_integer("model_width", 32, "Filters of the first conv stage (cnn, resnet: 16 is the "
                         "paper's) or hidden units (mlp).",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("model_depth", 2, "Conv stages (cnn: each halves the resolution and doubles the "
                         "filters), hidden layers (mlp), or layers with weights (resnet: 6n + 2, e.g. 20, 32, 56).",
                         lower_bound=1, **fv)
    flags.DEFINE_float("dropout", 0.3, "Dropout rate before the classifier head.",
                       lower_bound=0.0, upper_bound=0.95, **fv)
    flags.DEFINE(NumberListParser(int), "convs_per_stage", "", "cnn: conv blocks in each stage, one number for "
                 "every stage or one a stage (--model_depth of them), e.g. 1,2,2,2: a first stage of one "
                 "convolution, whose second one at full resolution costs the most and adds the least (empty: "
                 "2 a stage; lean_cnn is 1 a stage).", serializer=flags.CsvListSerializer(","), **fv)
    flags.DEFINE_boolean("fused_batchnorm", False, "cnn, lean_cnn, resnet: batch norm by TensorFlow's fused "
                         "kernel in training (models/fused_batchnorm.py): the same computation as Keras' layer up to "
                         "rounding, 1.2-1.4x faster training for the cnn on a CPU. Off by default because every "
                         "recipe's published numbers and pinned losses were measured with Keras' layer.", **fv)
    flags.DEFINE_string("init_from", "", "Warm start: RUN_DIR of another tapeloop run, optionally :best or "
                        ":final (default: the weights its train.py scored). Variables that match this model's "
                        "by place and shape are loaded; the others (a head for another class count) keep "
                        "their initialization. A resumed run continues from its own checkpoint.", **fv)
    flags.DEFINE_string("pretrained", "none", "keras.applications backbones: none (random initialization), "
                        "imagenet (Keras downloads and checks the weights) or PATH, a Keras weights file "
                        "(.weights.h5 or .h5) of the backbone without its top.", **fv)
    flags.DEFINE_enum("freeze", "none", ("none", "backbone"), "backbone: train only the head (the model's "
                      "last layer); frozen layers keep batch norm in inference mode and get no weight decay "
                      "or optimizer slots.", **fv)
    flags.DEFINE_integer("unfreeze_after_epochs", 0, "With --freeze=backbone: train the whole model from "
                         "this epoch on, the backbone at --backbone_lr_scale of the rate (0: stay frozen).",
                         lower_bound=0, **fv)
    flags.DEFINE_float("backbone_lr_scale", 0.1, "After --unfreeze_after_epochs: the backbone's learning rate "
                       "as a fraction of the head's (the schedule's).", lower_bound=0.0, upper_bound=1.0, **fv)
    # Loss
    flags.DEFINE(LossWeightsParser(), "loss_weights", "cross_entropy=1.0", "The loss: term=weight "
                 f"pairs, summed. Terms: {', '.join(LOSS_TERMS)} (l2: half the sum of squared kernels).",
                 serializer=LossWeightsSerializer(), **fv)
    flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing for cross_entropy: targets become "
                       "(1 - s) * one_hot + s / num_classes.", lower_bound=0.0, upper_bound=0.5, **fv)
    flags.DEFINE_float("focal_gamma", 2.0, "Focusing exponent of the focal term.", lower_bound=0.0, **fv)
    flags.DEFINE(ClassWeightsParser(), "class_weights", "none", "Per-class weights of the training "
                 "loss: none, balanced (n / (k * count_c) from the training labels) or w0,w1,...; "
                 "scaled so the mean example weight is 1. Evaluation losses are never weighted.",
                 serializer=ClassWeightsSerializer(), **fv)
    # Optimization
    flags.DEFINE_enum("optimizer", "adam", OPTIMIZERS, "Optimizer.", **fv)
    flags.DEFINE_float("learning_rate", 1e-3, "Learning rate.", lower_bound=1e-12, **fv)
    flags.DEFINE_float("momentum", 0.9, "Momentum for sgd.", lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_float("weight_decay", 1e-4, "Decoupled weight decay for adamw and sgd (kernels only: "
                       "biases and normalization parameters are spared); adam has none.", lower_bound=0.0, **fv)
    flags.DEFINE_float("clip_grad_norm", 0.0, "Clip the gradients to this global norm (0: no clipping). "
                       "gradients/global_norm logs the norm before clipping.", lower_bound=0.0, **fv)
    # Learning-rate schedule
    flags.DEFINE_enum("lr_schedule", "constant", LR_SCHEDULES, "Learning-rate schedule, a function of the "
                      "global step: constant; step (--lr_boundaries, --lr_values); exponential "
                      "(--lr_decay_rate every --lr_decay_steps); cosine (to --min_learning_rate over "
                      "--lr_decay_steps); onecycle (--onecycle_*); plateau (--plateau_*).", **fv)
    flags.DEFINE_integer("warmup_steps", 0, "Linear warm-up in front of the schedule: step s < W trains "
                         "at (s + 1) / W of the rate at step W.", lower_bound=0, **fv)
    flags.DEFINE(NumberListParser(int), "lr_boundaries", "", "step: the steps after which the rate "
                 "moves to the next of --lr_values (Keras PiecewiseConstantDecay).",
                 serializer=flags.CsvListSerializer(","), **fv)
    flags.DEFINE(NumberListParser(float), "lr_values", "", "step: the rates, one more than "
                 "--lr_boundaries; they replace --learning_rate.", serializer=flags.CsvListSerializer(","), **fv)
    flags.DEFINE_integer("lr_decay_steps", 0, "exponential: steps per factor of --lr_decay_rate (0: one "
                         "epoch); cosine: steps from the end of warm-up to --min_learning_rate (0: to "
                         "the end of training).", lower_bound=0, **fv)
    flags.DEFINE_float("lr_decay_rate", 0.5, "exponential: factor per --lr_decay_steps.",
                       lower_bound=1e-6, upper_bound=1.0, **fv)
    flags.DEFINE_float("min_learning_rate", 0.0, "Floor of exponential and plateau; end point of cosine.",
                       lower_bound=0.0, **fv)
    flags.DEFINE_float("onecycle_peak_fraction", 0.3, "onecycle: share of the steps spent rising to "
                       "--learning_rate.", lower_bound=0.01, upper_bound=0.99, **fv)
    flags.DEFINE_float("onecycle_initial_ratio", 0.04, "onecycle: the first rate, as a fraction of "
                       "--learning_rate.", lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_float("onecycle_final_ratio", 1e-4, "onecycle: the last rate, as a fraction of "
                       "--learning_rate.", lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_enum("plateau_metric", "loss", EVAL_METRICS, "plateau: the validation metric watched.", **fv)
    flags.DEFINE_float("plateau_factor", 0.2, "plateau: multiplies the rate when the metric stalls.",
                       lower_bound=1e-6, upper_bound=0.999, **fv)
    flags.DEFINE_integer("plateau_patience", 2, "plateau: evaluations without improvement before the "
                         "rate is lowered.", lower_bound=1, **fv)
    # Stopping
    flags.DEFINE_enum("early_stopping_metric", "accuracy", EVAL_METRICS, "The validation metric that "
                      "defines the best weights (RUN/best, the export) and early stopping; a tie on an "
                      "accuracy goes to the lower validation loss (early stopping counts from the last gain "
                      "in the metric itself).", **fv)
    flags.DEFINE_integer("early_stopping_patience", 0, "Stop after this many evaluations without a new "
                         "best --early_stopping_metric (0: never stop early).", lower_bound=0, **fv)
    flags.DEFINE_float("divergence_factor", 10.0, "Stop with an error when the logged training loss is "
                       "NaN or Inf, or exceeds both this multiple of its running minimum and the "
                       "first step's loss (0: only NaN and Inf).", lower_bound=0.0, **fv)
    flags.DEFINE_boolean("score_test", True, "Score the final weights on the test split (results.json \"test\"); "
                         "tune.py turns it off for its trials, so that a search never sees the test split.", **fv)
    flags.DEFINE_integer("batch_size", 128, "Training batch size (of each micro-batch under "
                         "--accumulate_steps).", lower_bound=1, **fv)
    flags.DEFINE_integer("accumulate_steps", 1, "Gradient accumulation: micro-batches of --batch_size whose "
                         "gradients are summed before one update, which so sees N x --batch_size examples "
                         "with the activations of one micro-batch in memory. Steps (the schedule, "
                         "--max_steps, checkpoints, resume) count updates.", lower_bound=1, **fv)
    flags.DEFINE_integer("eval_batch_size", 1000, "Evaluation batch size.", lower_bound=1, **fv)
    flags.DEFINE_integer("epochs", 10, "Passes over the training split.", lower_bound=1, **fv)
    flags.DEFINE_integer("max_steps", 0, "Step budget; stops earlier than --epochs if reached "
                         "(0: no budget).", lower_bound=0, **fv)
    flags.DEFINE_integer("seed", 0, "Seed for the validation split, shuffling and initialization.", **fv)
    flags.DEFINE_boolean("deterministic", False, "Deterministic kernels (tf.config.experimental."
                         "enable_op_determinism), so that reruns with the same flags log identical losses; "
                         "slower on GPUs.", **fv)
    flags.DEFINE_boolean("jit_compile", False, "XLA-compile the train step (2.4x slower for the cnn on the "
                         "2-core CPU tapeloop is developed on; try it on GPUs).", **fv)
    flags.DEFINE_enum("mixed_precision", "auto", ("auto", "none", "bfloat16", "float16"), "Compute in 16-bit "
                      "floats with float32 variables, logits and loss; float16 adds dynamic loss scaling. auto: "
                      "bfloat16 where the hardware runs it natively (CPUs with AVX512_BF16 or AMX, as oneDNN "
                      "sees them under ONEDNN_MAX_CPU_ISA; GPUs of compute capability 8.0+; TPUs), float32 "
                      "(none) elsewhere; the run logs its choice and results.json records it. bfloat16 on other "
                      "hardware is emulated, several times slower than float32.", **fv)
    flags.DEFINE_float("ema_decay", 0.0, "Keep an exponential moving average of the weights with this "
                       "decay (e.g. 0.999) and use it for evaluation, best/ and the export (0: off).",
                       lower_bound=0.0, upper_bound=0.99999, **fv)
    flags.DEFINE_float("batchnorm_momentum", 0.0, "Momentum of the batch-norm moving statistics (0: from the "
                       "run's length, averaging over at most an epoch's steps and a fifth of the run's, between "
                       "PyTorch's 0.9 (10 steps) and Keras' 0.99 (100 steps); Keras' fixed 0.99 lags the weights "
                       "in short runs and runs of few steps an epoch).",
                       lower_bound=0.0, upper_bound=0.9999, **fv)
    flags.DEFINE_integer("precise_bn_batches", 0, "Precise batch norm: before every evaluation and the export, "
                         "re-estimate each batch-norm layer's statistics on this many --batch_size batches of "
                         "(unaugmented) training images with the weights fixed, instead of the moving averages, "
                         "which lag the weights in short runs (0: off; pycls and mmpretrain use 8,192 images, "
                         "64 batches of 128).", lower_bound=0, **fv)
    flags.DEFINE_integer("steps_per_loop", 1, "Train steps per tf.function call (a tf.while_loop over the "
                         "batches); logs and checkpoints fall on loop boundaries.", lower_bound=1, **fv)
    # Distribution
    flags.DEFINE_enum("strategy", "default", STRATEGIES, "tf.distribute strategy: default (one device, "
                      "no distribution); one_device; mirrored (every local GPU, else every --cpu_devices "
                      "CPU); multi_worker (the machines in TF_CONFIG); tpu (--tpu). --batch_size is the "
                      "global batch, split evenly over the replicas.", **fv)
    flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into this many logical devices, so that "
                         "--strategy=mirrored can be tried and tested without GPUs.", lower_bound=1, **fv)
    flags.DEFINE_string("tpu", "", "--strategy=tpu: the TPU's name or grpc:// address (empty: the "
                        "TPU VM this runs on).", **fv)
    flags.DEFINE_string("data_service", "", "grpc://HOST:PORT of a tf.data service dispatcher "
                        "(scripts/data_service.py): training batches are built whole, each exactly as here, by its "
                        "workers, which must reach --data_dir at the same path; they arrive in the order the "
                        "workers finish them, so a run is not bit-reproducible (each epoch still holds each of "
                        "its batches once). Arrays and image folders (also streamed); not tfrecord.", **fv)
    flags.DEFINE_float("data_service_timeout", 30.0, "Seconds to wait for the --data_service dispatcher and a "
                       "worker to serve a first batch before stopping with the paragraph.", lower_bound=1.0, **fv)
    # Run directory, logging, checkpoints
    flags.DEFINE_string("run_dir", None, "Run directory: logs, checkpoints, exported model, results. "
                        "Rerunning on a directory with checkpoints resumes.", **fv)
    flags.DEFINE_integer("log_every_steps", 100, "Steps between logged training scalars.", lower_bound=1, **fv)
    flags.DEFINE_integer("checkpoint_every_steps", 0, "Steps between extra checkpoints within an "
                         "epoch (0: only at the end of each epoch).", lower_bound=0, **fv)
    flags.DEFINE_integer("image_summary_every_steps", 0, "Steps between grids of the training batch "
                         "about to be trained on, with labels (0: the first batch only).", lower_bound=0, **fv)
    flags.DEFINE_integer("histogram_every_steps", 0, "Steps between histograms of every weight and of its "
                         "gradient at that step (0: none).", lower_bound=0, **fv)
    flags.DEFINE(NumberListParser(int), "profile_steps", "", "START,STOP: capture a TensorFlow profiler "
                 "trace of those steps into the run directory (TensorBoard's Profile tab).",
                 serializer=flags.CsvListSerializer(","), **fv)
    flags.DEFINE_integer("keep_checkpoints", 3, "Latest checkpoints kept in RUN/checkpoints.", lower_bound=1, **fv)
    flags.DEFINE_enum("progress", "auto", ("auto", "bar", "log"), "Progress display: a bar on a "
                      "terminal, one log line per --log_every_steps otherwise.", **fv)
    flags.DEFINE_enum("checks", "standard", CHECK_LEVELS, "In-graph guards between the stages: off; "
                      "standard (batch dtype, shape and range, labels, finite logits, loss and gradient "
                      "norm); full (also every gradient and every variable after the update).", **fv)
    _register_validators(flag_values)


def require_finite_floats(flag_list, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The float flags among `flag_list` take finite values only (absl's bounds let inf and nan through)."""
    for flag in flag_list:
        if isinstance(flag.parser, flags.FloatParser):
            flags.register_validator(flag.name, lambda value: value is None or math.isfinite(value),
                                     f"--{flag.name} must be a finite number", flag_values=flag_values)
            # absl runs validators in the order registered: this one goes first, before comparisons NaN fools.
            flag.validators[-1].insertion_index = -1


def _register_validators(flag_values: flags.FlagValues) -> None:
    """Checks that involve several flags; each failure names the flags and the fix."""
    require_finite_floats([flag_values[field.name] for field in dataclasses.fields(TrainConfig)], flag_values)
    register_run_dir_validator(flag_values)
    def step_schedule_is_complete(values):
        if values["lr_schedule"] != "step":
            return True
        boundaries, rates = values["lr_boundaries"], values["lr_values"]
        return (len(rates) == len(boundaries) + 1 and all(rate > 0 for rate in rates)
                and list(boundaries) == sorted(set(boundaries)) and all(b > 0 for b in boundaries))

    flags.register_multi_flags_validator(
        ["lr_schedule", "lr_boundaries", "lr_values"], step_schedule_is_complete,
        "--lr_schedule=step needs increasing positive --lr_boundaries and one more positive rate in "
        "--lr_values, e.g. --lr_boundaries=2000,4000 --lr_values=1e-3,1e-4,1e-5", flag_values=flag_values)
    flags.register_validator("channels", lambda channels: channels in (1, 3), "--channels must be 1 or 3",
                             flag_values=flag_values)
    flags.register_validator(
        "input_range", lambda bounds: len(bounds) == 2 and bounds[0] < bounds[1],
        "--input_range needs two numbers LOW,HIGH with LOW < HIGH, e.g. 0,255", flag_values=flag_values)
    flags.register_validator("convs_per_stage", lambda counts: all(count >= 1 for count in counts),
                             "--convs_per_stage needs counts of 1 or more, e.g. 1,2,2,2", flag_values=flag_values)
    flags.register_validator(
        "profile_steps", lambda steps: not steps or (len(steps) == 2 and 0 <= steps[0] < steps[1]),
        "--profile_steps needs START,STOP with 0 <= START < STOP, e.g. 100,110", flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["lr_schedule", "warmup_steps"],
        lambda values: not (values["lr_schedule"] == "onecycle" and values["warmup_steps"]),
        "--lr_schedule=onecycle has its own warm-up: drop --warmup_steps (tune --onecycle_peak_fraction)",
        flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["lr_schedule", "early_stopping_patience", "validation_split"],
        lambda values: values["validation_split"] > 0 or not (
            values["lr_schedule"] == "plateau" or values["early_stopping_patience"]),
        "--lr_schedule=plateau and --early_stopping_patience react to validation results: "
        "set --validation_split above 0", flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["score_test", "validation_split"], lambda values: values["score_test"] or values["validation_split"] > 0,
        "--noscore_test leaves the run no split to be scored on: set --validation_split above 0",
        flag_values=flag_values)
    flags.register_validator(
        "data_service", lambda url: not url or re.fullmatch(r"grpc://[^\s/:]+:\d+", url) is not None,
        "--data_service needs the dispatcher's grpc://HOST:PORT, e.g. grpc://10.0.0.5:5050", flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["data_service", "dataset"], lambda values: not (values["data_service"] and values["dataset"] == "tfrecord"),
        "--data_service builds each batch whole on a worker, which needs the examples by index (arrays, or an "
        "image folder, streamed or not); TFRecord shards are read in sequence: train from the image folder the "
        "shards were made from (--dataset=image_folder streams it when it exceeds --max_memory_gb)",
        flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["lr_schedule", "learning_rate", "min_learning_rate"],
        lambda values: values["lr_schedule"] not in ("exponential", "cosine", "plateau")
        or values["min_learning_rate"] < values["learning_rate"],
        "--min_learning_rate must be below --learning_rate", flag_values=flag_values)


GLOB_CHARACTERS = frozenset("*?[]")


def register_run_dir_validator(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Refuses a --run_dir with glob characters: TensorFlow's checkpoint reader treats them as
    wildcards, so such a run could save checkpoints but never read them back."""
    flags.register_validator(
        "run_dir", lambda run_dir: not run_dir or not GLOB_CHARACTERS & set(run_dir),
        "--run_dir must not contain * ? [ or ] (TensorFlow reads checkpoint paths as patterns, so the "
        "run could never restore its checkpoints): use e.g. runs/lr_0.1", flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> TrainConfig:
    """Builds the TrainConfig from parsed flags; --standardize left unset becomes on, except for
    a model that normalizes [0, 1] pixels itself (models.registry.PRETRAINED)."""
    values = {field.name: flag_values[field.name].value for field in dataclasses.fields(TrainConfig)}
    if values["standardize"] is None:
        values["standardize"] = values["model"] not in PRETRAINED
    return TrainConfig(**values)


def parse_config(argv: list[str]) -> TrainConfig:
    """Parses tapeloop flags (e.g. `["--flagfile=RUN/flags.txt"]`) into a TrainConfig.

    Uses a private FlagValues, so it works beside the global FLAGS of a script.
    """
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["tapeloop", *argv])
    return config_from_flags(flag_values)


def serialize_config(config: TrainConfig) -> str:
    """Renders every field as a flagfile, so that `--flagfile=RUN/flags.txt` reproduces the run."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    lines = []
    for field in dataclasses.fields(TrainConfig):
        flag = flag_values[field.name]
        flag.value = getattr(config, field.name)
        if flag.value is not None:
            lines.append(flag.serialize())
    return "\n".join(lines) + "\n"
