"""Model settings checked against the model registry before a model is built: a name it has, a
depth it allows, images large enough for its stages, settings only the models that take them get,
pixels and weights a pretrained backbone can use (weights files only: nothing that can hold code)."""

from models.registry import BUILDERS, EXTRA_SETTINGS, PRETRAINED, depth_rule_broken, smallest_image_side
from settings.config import TrainConfig
from settings.declarations import SETTINGS
from settings.errors import TapeloopError

WEIGHT_FILE_SUFFIXES = (".weights.h5", ".h5")  # HDF5 weights: tensors only, nothing to execute.
DEFAULTS = {setting.name: setting.resolved_default for setting in SETTINGS}
PER_STAGE_SETTINGS = ("convs_per_stage", "filters_per_stage", "kernel_sizes")


def extra_settings(config: TrainConfig) -> dict:
    """The settings --model's builder takes beyond width, depth and dropout, from the flags of their names."""
    return {name: getattr(config, name) for name in EXTRA_SETTINGS.get(config.model, ())}


def refuse_unbuildable(config: TrainConfig, image_shape: tuple[int, ...]) -> None:
    """The paragraph for a --model that cannot be built as the flags ask, on images of `image_shape`."""
    if config.model not in BUILDERS:
        raise TapeloopError(
            stage="model", problem=f"unknown model {config.model!r}", expected=f"one of {', '.join(sorted(BUILDERS))}",
            found=repr(config.model), fix="pass --model with one of the names above, or add yours to "
            "models.registry.BUILDERS")
    allowed_depths = depth_rule_broken(config.model, config.model_depth)
    if allowed_depths:
        raise TapeloopError(
            stage="model", problem=f"--model={config.model} cannot be built with --model_depth={config.model_depth}",
            expected=f"--model_depth of {allowed_depths}", found=f"--model_depth={config.model_depth}",
            fix="pass one of those, e.g. --model_depth=20")
    refuse_wrong_pixels_or_weights(config)
    refuse_settings_the_model_lacks(config)
    refuse_small_images(config, image_shape)


def refuse_small_images(config: TrainConfig, image_shape: tuple[int, ...]) -> None:
    """Each stage of a cnn halves the image (after valid convolutions trim it): it must keep a pixel."""
    smallest = smallest_image_side(config.model, config.model_depth, **extra_settings(config))
    height, width = image_shape[:2]
    if min(height, width) >= smallest:
        return
    valid = config.conv_padding == "valid" and "conv_padding" in EXTRA_SETTINGS.get(config.model, ())
    raise TapeloopError(
        stage="model", problem=f"the images are too small for --model={config.model} with --model_depth="
        f"{config.model_depth}", expected=f"images of at least {smallest}x{smallest} pixels (each of the "
        f"{config.model_depth} stages halves them" + (", after its valid convolutions take kernel side - 1 pixels "
        "each)" if valid else ")"), found=f"images of {height}x{width}",
        fix=(f"lower --model_depth or --kernel_sizes, or pass --conv_padding=same, or bring the images to "
             f"{smallest} pixels or more (--image_size for image folders)" if valid else
             f"lower --model_depth to {max(1, min(height, width).bit_length() - 1)} or less, or bring the "
             f"images to {smallest} pixels or more (--image_size for image folders)"))


def refuse_settings_the_model_lacks(config: TrainConfig) -> None:
    """Settings a model's builder does not take (EXTRA_SETTINGS) stay at their defaults; the per-stage
    ones have one value for every stage or one a stage; fused batch norm needs batch norm."""
    for name in sorted({name for settings in EXTRA_SETTINGS.values() for name in settings}):
        if getattr(config, name) != DEFAULTS[name] and name not in EXTRA_SETTINGS.get(config.model, ()):
            takers = sorted(model for model, settings in EXTRA_SETTINGS.items() if name in settings)
            raise TapeloopError(
                stage="model", problem=f"--{name} does not apply to --model={config.model}",
                expected=f"--{name} with --model of {', '.join(takers)}", found=f"--model={config.model}",
                fix=f"drop --{name}")
    for name in PER_STAGE_SETTINGS:
        values = getattr(config, name)
        if len(values) not in (0, 1, config.model_depth):
            raise TapeloopError(
                stage="model", problem=f"--{name}={','.join(map(str, values))} does not match "
                f"--model_depth={config.model_depth}", expected=f"one number for every stage or "
                f"{config.model_depth}, one a stage", found=f"{len(values)} numbers",
                fix="give one number, or one for each stage")
    if config.fused_batchnorm and not config.batchnorm:
        raise TapeloopError(
            stage="model", problem="--fused_batchnorm with --nobatchnorm", expected="batch norm to fuse",
            found="--nobatchnorm: the convolutions have no batch norm", fix="drop one of the two")


def refuse_wrong_pixels_or_weights(config: TrainConfig) -> None:
    """A pretrained backbone must get [0, 1] pixels (it preprocesses them itself), and only a
    backbone takes --pretrained; weights are read from weights files only, never from a format
    that can hold code."""
    if config.model in PRETRAINED and config.standardize:
        raise TapeloopError(
            stage="model", problem=f"--standardize would hand --model={config.model} standardized images",
            expected=f"[0, 1] pixels, which {config.model} maps inside to the {PRETRAINED[config.model]} "
                     "its ImageNet weights were trained on",
            found="--standardize (mean 0, std 1 per dataset): the pretrained features would see the wrong "
                  "range, the transfer-learning form of unnormalized pixels",
            fix="drop --standardize (backbones default to --nostandardize)")
    if config.pretrained != "none" and config.model not in PRETRAINED:
        raise TapeloopError(
            stage="model", problem=f"--model={config.model} has no pretrained weights",
            expected=f"--pretrained with one of {', '.join(sorted(PRETRAINED))}",
            found=f"--pretrained={config.pretrained}",
            fix="drop --pretrained, or pick a backbone; --init_from starts from another tapeloop run")
    if config.pretrained not in ("none", "imagenet") and not config.pretrained.endswith(WEIGHT_FILE_SUFFIXES):
        raise TapeloopError(
            stage="model", problem=f"--pretrained={config.pretrained} is not a weights file",
            expected=f"none, imagenet, or a Keras weights file ({' or '.join(WEIGHT_FILE_SUFFIXES)})",
            found=config.pretrained,
            fix="save the backbone's weights with model.save_weights('backbone.weights.h5') and pass that file")
