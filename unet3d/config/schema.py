"""The config schema: every key of a run, its type, its default and meaning.

The top level keeps the TF Model Garden UNet3D keys flat and with their
original meaning, so its YAML recipes (``configs/cloud``) load unchanged.
Everything the Model Garden did not have lives in a named group
(``model``, ``data``, ``augmentation`` inside ``data``, ``loss_options``,
``metrics``, ``train``, ``inference``, ``predict``, ``plan``).

The comment above each field is its documentation: `unet3d.config_reference`
reads it into docs/config_reference.md. The file is long because the schema
is one fact; splitting the groups apart would split the reference a reader
looks up in one place. Plain Python: no TensorFlow, no YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union


# ----------------------------------------------------------------------------
# Groups
# ----------------------------------------------------------------------------


@dataclass
class ModelConfig:
  """Architecture choices beyond the Model Garden's flat keys."""
  # unet3d | unet3plus | unet3plus_deepsup | unet3plus_deepsup_cgm
  name: str = 'unet3d'
  # 3: volumes; 2: the same builders on slices.
  spatial_dims: int = 3
  # batch | instance | group | none. None follows the flat `use_batch_norm`.
  normalization: Optional[str] = None
  # Groups of group norm (at most the layer's channels).
  num_groups: int = 8
  # relu | leaky_relu | elu | prelu
  activation: str = 'relu'
  # Negative slope of leaky_relu.
  leaky_relu_alpha: float = 0.01
  # pytorch-3dunet's conv layer order, e.g. gcr, crg, cbr, cbrd: c conv,
  # g/b/i group/batch/instance norm, r/l/e relu/leaky relu/elu, d/D
  # dropout/channel dropout, in call order. Set, it replaces normalization and activation. Empty: conv ->
  # normalization -> activation.
  layer_order: Optional[str] = None
  # Dropout rate of layer_order's d / D letters (pytorch-3dunet's
  # dropout_prob).
  layer_dropout: float = 0.1
  # Residual conv units (identity or 1x1 projection shortcut).
  residual: bool = False
  # maxpool | strided_conv
  downsampling: str = 'maxpool'
  # Per-level filters. None: num_base_filters * 2**level (unet3d), or the
  # UNet 3+ paper's [64, 128, 256, 512, 1024] scaled by num_base_filters/64.
  filters: Optional[list[int]] = None
  # Caps every level's filters. Empty: no cap.
  max_filters: Optional[int] = None
  # Down-sampling factor per level transition and spatial axis, finest
  # first: (levels - 1) entries of spatial_dims ints >= 1, e.g.
  # [[2, 2, 1], [2, 2, 2], [2, 2, 2]] pools only in-plane first (nnU-Net's
  # plan for thick slices). Input sizes must divide by each axis' product.
  # Empty: 2 on every axis.
  pool_sizes: Optional[list[list[int]]] = None
  # Conv kernel per level and spatial axis: `levels` entries of spatial_dims
  # odd ints >= 1, e.g. [[3, 3, 1], [3, 3, 3], ...]; decoder level d uses
  # entry d. Empty: 3 everywhere.
  kernel_sizes: Optional[list[list[int]]] = None
  # UNet 3+: channels of each full-scale skip branch (64 in the paper).
  cat_channels: int = 64
  # Deep supervision head weights, finest head first. None: equal weights.
  # 'nnunet' gives 1/2**i normalised to sum to 1.
  deep_supervision_weights: Optional[Union[str, list[float]]] = None
  # Weight of the classification-guided module's BCE in the total loss.
  cgm_loss_weight: float = 1.0
  # Per-block tf.recompute_grad to trade compute for activation memory.
  recompute_grad: bool = False
  # Batch norm with the statistics of the global batch (Keras
  # BatchNormalization(synchronized=True): an all-reduce per layer) instead
  # of each replica's own cases. None: on under mirrored / multi_worker when
  # a replica gets fewer than 4 cases of train_batch_size, off otherwise.
  # Only training differs; checkpoints are the same either way.
  sync_batch_norm: Optional[bool] = None
  # softmax (exclusive classes) | sigmoid (multi-label, e.g. BraTS regions)
  output_activation: str = 'softmax'


@dataclass
class AugmentationConfig:
  """Training-time augmentation. Each `*_prob` is a per-sample probability.

  Defaults follow nnU-Net's probabilities. Augmentation never runs in eval.
  """
  # false: no augmentation at all (patch sampling still applies).
  enabled: bool = True
  # Probability of a flip, per axis.
  flip_prob: float = 0.5
  # Empty: every spatial axis.
  flip_axes: Optional[list[int]] = None
  # A flip of this axis swaps each pair of classes (e.g. left/right kidney).
  left_right_axis: Optional[int] = None
  # Pairs of classes swapped by a flip of left_right_axis, e.g. [[1, 2]].
  left_right_label_pairs: Optional[list[list[int]]] = None
  # Rotation by 90, 180 or 270 degrees in one (square) plane.
  rot90_prob: float = 0.0
  # The two spatial axes of the rot90 plane.
  rot90_axes: list[int] = field(default_factory=lambda: [0, 1])
  # Rotation (each angle uniform in +-rotation_degrees) and isotropic scaling
  # (> 1 zooms in), applied while the patch is cut from the whole volume.
  affine_prob: float = 0.2
  # Largest rotation angle per axis, in degrees.
  rotation_degrees: float = 30.0
  # Range of the isotropic scale factor.
  scale_range: list[float] = field(default_factory=lambda: [0.7, 1.4])
  # Smooth random displacement: Gaussian-smoothed noise (sigma in voxels)
  # scaled to a peak displacement of elastic_magnitude voxels.
  elastic_prob: float = 0.0
  # Smoothing of the displacement field, in voxels.
  elastic_sigma: float = 10.0
  # Peak displacement, in voxels.
  elastic_magnitude: float = 2.0
  # Multiplicative brightness: intensities times a factor.
  brightness_prob: float = 0.15
  # Range of the brightness factor.
  brightness_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
  # Contrast: intensities scaled about their mean, range kept.
  contrast_prob: float = 0.15
  # Range of the contrast factor.
  contrast_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
  # Gamma on intensities rescaled to [0, 1] (mean and std kept).
  gamma_prob: float = 0.3
  # Range of gamma.
  gamma_range: list[float] = field(default_factory=lambda: [0.7, 1.5])
  # Additive Gaussian noise.
  noise_prob: float = 0.1
  # The noise std is uniform in [0, noise_std].
  noise_std: float = 0.1
  # Gaussian blur.
  blur_prob: float = 0.2
  # Range of the blur sigma, in voxels.
  blur_sigma_range: list[float] = field(default_factory=lambda: [0.5, 1.0])
  # Simulated low resolution: nearest down-sampling, linear up-sampling.
  low_resolution_prob: float = 0.25
  # Range of the down-sampling zoom.
  low_resolution_zoom_range: list[float] = field(
      default_factory=lambda: [0.5, 1.0])


@dataclass
class DataConfig:
  """Input pipeline settings."""
  # unet3d: this project's schema (whole volumes, see unet3d/input/schema.py).
  # model_garden: `image/ct_image` + one-hot `image/label` at input_image_size.
  record_format: str = 'unet3d'
  # Share of training patches centred on a foreground voxel (nnU-Net: 0.33).
  foreground_oversample: float = 0.33
  # center_crop: eval on a centre crop/pad of input_image_size.
  # whole_volume: eval on whole volumes with sliding-window inference.
  eval_mode: str = 'center_crop'
  # center_crop eval size; empty: input_image_size. Any size divisible by the
  # model's stride on each axis works, e.g. a whole demo volume.
  eval_image_size: Optional[list[int]] = None
  # none | memory | a file path prefix for an on-disk cache.
  cache: str = 'none'
  # Cases in the training shuffle buffer.
  shuffle_buffer: int = 64
  # Threads for tf.data map; None lets tf.data autotune.
  num_parallel_calls: Optional[int] = None
  # Only these folds of a split file are used, when `split_file` is set.
  split_file: Optional[str] = None
  # The fold of split_file to train (its train side) and evaluate (its val
  # side).
  fold: int = 0
  augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)


@dataclass
class LossConfig:
  """Options of the loss named by the flat `loss` key."""
  # false: the dice-family losses leave class 0 (background) out.
  include_background: bool = True
  # Dice over the whole batch (nnU-Net's option), not per example.
  batch_dice: bool = False
  # Added to the numerator and denominator of dice-family ratios.
  smooth: float = 1e-5
  # Per-class weights (num_classes values): weighted_cross_entropy, dice,
  # jaccard, tversky, bce channels, extra factors of wce.
  class_weights: Optional[list[float]] = None
  # Voxels with this label index are left out of every loss.
  ignore_label: Optional[int] = None
  # Focal loss weight of foreground (alpha) vs background (1 - alpha).
  focal_alpha: float = 0.25
  # Focal loss focusing exponent.
  focal_gamma: float = 2.0
  # Tversky weight of false positives.
  tversky_alpha: float = 0.3
  # Tversky weight of false negatives.
  tversky_beta: float = 0.7
  # Weight of the cross-entropy term of dice_ce / bce_dice.
  ce_weight: float = 1.0
  # Weight of the dice term of dice_ce / bce_dice.
  dice_weight: float = 1.0


@dataclass
class MetricsConfig:
  """Evaluation metrics."""
  # Kept for old configs: how a class absent from both label and prediction
  # scores. 'one' is empty_masks=fixed, 'exclude' is empty_masks=nan; it
  # only applies while empty_masks is unset.
  empty_class: str = 'one'
  # The one empty-mask policy of every metric (docs/evaluation.md). fixed:
  # a class empty in both scores dice/IoU/NSD 1 and HD95/ASSD 0; exactly one
  # empty: 0 and hd95_penalty_mm. nan: a class empty in both is NaN in every
  # metric and left out of every mean; exactly one empty: dice/IoU/NSD 0,
  # HD95/ASSD NaN. Empty: follows empty_class (one: fixed, exclude: nan).
  # Set, it wins; empty_class=exclude with empty_masks=fixed is refused.
  empty_masks: Optional[str] = None
  # max_directed: HD95 is the larger of the two directed 95th percentiles
  # (MONAI, DeepMind surface-distance, BraTS). pooled: the 95th percentile
  # of both directed distance sets together (medpy).
  hd95: str = 'max_directed'
  # area: each surface element weighs its area in mm² (DeepMind
  # surface-distance; MSD and Metrics Reloaded NSD). voxel: every boundary
  # voxel counts once (medpy, MONAI). Applies to HD95, ASSD and NSD.
  surface_weighting: str = 'area'
  # HD95 and ASSD (mm) when exactly one mask is empty under empty_masks=
  # fixed, and of missed or false-positive lesions: the diagonal of BraTS's
  # 240x240x155 1 mm volume. .inf reproduces reports before this key.
  hd95_penalty_mm: float = 373.13
  # Report BraTS whole tumour / tumour core / enhancing regions as well.
  brats_regions: bool = False
  # HD95, ASSD and NSD per case and class on the host (scipy distance
  # transforms inside the masks' bounding box). Off: those report columns
  # stay empty, for faster periodic evaluation of large volumes.
  surface_metrics: bool = True
  # NSD counts surface elements within this distance (mm) of the other
  # surface.
  surface_tolerance_mm: float = 1.0
  # Lesion-wise scores per case and class (BraTS 2023: 26-connected lesions,
  # merged when their dilations touch): lesion_dice, lesion_hd95,
  # lesion_tp, lesion_fp, lesion_fn, lesion_f1 columns.
  lesion_wise: bool = False
  # Lesions whose dilations by this distance (mm) touch count as one.
  lesion_dilation_mm: float = 3.0
  # Lesions of at most this volume (mm³) are left out (BraTS: 50 gliomas,
  # 2 metastases).
  lesion_min_volume_mm3: float = 50.0
  # PNG overlays (three orthogonal slices through each case's foreground
  # centre: image, label and prediction contours) in model_dir/eval/overlays.
  overlays: bool = True
  # Each case's image, label and prediction as NIfTI on the record's grid
  # (Intel's Decathlon U-Net): model_dir/eval/nifti/<case>_image.nii.gz,
  # _label, _prediction. Needs data.eval_mode whole_volume.
  save_nifti: bool = False


@dataclass
class InferenceConfig:
  """Sliding-window inference over whole volumes: eval (whole_volume mode),
  predict and the exported SavedModel."""
  # Fraction of a window shared with its neighbour along each axis.
  overlap: float = 0.5
  # gaussian (nnU-Net / MONAI importance map) | constant
  weighting: str = 'gaussian'
  # Test-time augmentation: every subset of these spatial axes (0-based) is
  # flipped, predicted, flipped back, and the probabilities averaged
  # (2^len passes). Empty: off. nnU-Net mirrors [0, 1, 2].
  mirror_axes: list[int] = field(default_factory=list)
  # CPU only: let oneDNN run the convolutions in bfloat16 (grappler's
  # auto_mixed_precision_onednn_bfloat16; fast on CPUs with AVX512_BF16 or
  # AMX, emulated and slow elsewhere). Probabilities change by ~1e-3, labels
  # near ties; the weights stay float32. Eval and predict; not the export.
  onednn_bfloat16: bool = False
  # Model folders whose probabilities are averaged (eval, predict, export),
  # each restored with the architecture of its own params.yaml. Empty: the
  # one model of model_dir. `--model_dir=a,b,c` sets it.
  ensemble: list[str] = field(default_factory=list)


@dataclass
class PredictConfig:
  """The predict mode: NIfTI volumes in, segmentations with their geometry out.

  Each input file is one case: a 3D volume (one channel) or a 4D
  [X, Y, Z, C] volume holding every channel. The output is
  `<output_dir>/<input name>_seg.nii.gz` on the input's grid, with its
  affine and header (uint8 class indices; [X, Y, Z, K] uint8 masks for
  sigmoid models).
  """
  # Glob of .nii/.nii.gz (or .h5/.hdf5) files (several: comma-separated).
  input_pattern: Optional[str] = None
  # Folder for the <name>_seg.nii.gz outputs.
  output_dir: Optional[str] = None
  # dataset_json: replay the converter's preprocessing (its dataset.json
  # `preprocessing` section) before inference and map the prediction back.
  # none: the inputs are already on the model's grid and normalised.
  preprocessing: str = 'dataset_json'
  # The converter's dataset.json. Empty: the one next to
  # training_file_pattern's shards, when there is one.
  dataset_json: Optional[str] = None
  # Per-class probabilities beside each segmentation: none | nifti
  # (<name>_probabilities.nii.gz, [X, Y, Z, K] as scaled uint16, since NIfTI
  # has no float16) | hdf5 (<name>_probabilities.h5, dataset `predictions`
  # float16 [K, Z, Y, X] as pytorch-3dunet writes).
  save_probabilities: str = 'none'
  # The dataset of .h5/.hdf5 inputs, (Z, Y, X) or (C, Z, Y, X)
  # (pytorch-3dunet's raw); they give <name>_predictions.h5 with datasets
  # `predictions` (uint8) and, when save_probabilities is not none,
  # `probabilities` (float16 [K, Z, Y, X]). See unet3d/inference/hdf5_io.py.
  hdf5_dataset: str = 'raw'
  # Keep only the largest connected component (face connectivity) of each
  # foreground class (true), or of these classes (a list; sigmoid models:
  # mask channels), as nnU-Net's post-processing. false: off.
  largest_component: Union[bool, list[int]] = False
  # Compare each segmentation with the training cases of the dataset.json
  # (class volume, component count, absent classes, centroid position; see
  # unet3d/inference/quality_control.py) and flag implausible ones in the
  # report and on stderr; the outputs are never changed. Skipped when there
  # is no dataset.json (preprocessing none without dataset_json).
  quality_control: bool = True


@dataclass
class TrainConfig:
  """Training-loop settings that the Model Garden did not have."""
  # Steps inside one tf.function call between host updates. Empty: 100 on
  # TPU, 50 on GPUs, 10 on CPU (so progress shows within seconds).
  steps_per_loop: Optional[int] = None
  # Save a checkpoint every this many steps (and at the end).
  checkpoint_every_n_steps: int = 200
  # Checkpoints kept in model_dir.
  keep_checkpoint_max: int = 3
  # TensorBoard scalars (loss, learning rate) every this many steps, whatever
  # steps_per_loop is.
  summary_every_n_steps: int = 50
  # Seconds between progress lines when stdout is not a terminal (a terminal
  # gets a progress bar).
  progress_interval_seconds: float = 30.0
  # train_and_eval: evaluate every this many steps (and at the end); 0: at
  # the end only.
  eval_every_n_steps: int = 0
  # train_and_eval: keep the checkpoint with the best mean foreground dice
  # in model_dir/best/ (with best.json).
  keep_best_checkpoint: bool = True
  # Stop when the mean foreground dice has not improved by more than
  # early_stopping_min_delta for this many evaluations; 0: never.
  early_stopping_patience: int = 0
  # The dice gain that counts as an improvement (early stopping, plateau).
  early_stopping_min_delta: float = 0.0
  # Multiply the learning rate by reduce_lr_factor after this many
  # evaluations without improvement (pytorch-3dunet's ReduceLROnPlateau);
  # 0: off.
  reduce_lr_patience: int = 0
  # The factor reduce-on-plateau applies, in (0, 1).
  reduce_lr_factor: float = 0.5
  # Reduce-on-plateau never takes the learning rate below this.
  min_learning_rate: float = 0.0
  # --benchmark: timed steps, one per call, after the warm-up steps.
  benchmark_steps: int = 50
  # --benchmark: untimed steps first (tracing, pipeline start).
  benchmark_warmup_steps: int = 5
  # constant | exponential (Model Garden) | cosine | polynomial (nnU-Net)
  lr_schedule: str = 'exponential'
  # Linear warm-up from 0 over this many steps, then the schedule.
  warmup_steps: int = 0
  # Decoupled weight decay of the optimizer; 0: none.
  weight_decay: float = 0.0
  # Clip gradients to this global norm. Empty: no clipping.
  gradient_clip_norm: Optional[float] = None
  # XLA-compile each replica's forward and backward pass (the all-reduce and
  # the update stay outside). None: off. Ignored on TPU, where the whole step
  # is compiled anyway, and dropped with a warning when synchronised batch
  # norm runs on several replicas (its all-reduce cannot sit inside XLA).
  jit_compile: Optional[bool] = None


@dataclass
class ExportConfig:
  """The export mode: a SavedModel, and ONNX or OpenVINO IR beside it."""
  # saved_model | onnx (+ model.onnx) | openvino (+ model.xml/.bin): the
  # `patches` signature converted (unet3d/inference/export_formats.py; the
  # `export` extra). `--export_format` sets it.
  format: str = 'saved_model'


@dataclass
class PlanConfig:
  """Where a planned recipe came from (`unet_main.py --mode=plan` writes
  these; params.yaml keeps them). Training ignores them."""
  # The converter's dataset.json the recipe was planned from.
  dataset_json: Optional[str] = None
  # sha256 of the fingerprint the planner read (unet3d/planning/fingerprint.py).
  fingerprint_sha256: Optional[str] = None
  # The budget the recipe was sized for (e.g. cpu2, gpu16g).
  budget: Optional[str] = None


# ----------------------------------------------------------------------------
# The whole config
# ----------------------------------------------------------------------------


@dataclass
class Config:
  """Every setting of a run. Flat keys are the Model Garden UNet3D's."""
  # --- paths ---
  # Checkpoints, summaries, params.yaml, reports (local or gs://).
  model_dir: str = ''
  # Training TFRecord glob (several: comma-separated).
  training_file_pattern: Optional[str] = None
  # Evaluation TFRecord glob (several: comma-separated).
  eval_file_pattern: Optional[str] = None
  # The TFRecords are GZIP-compressed.
  compressed_input: bool = True
  # precision: float32 | bfloat16 | float16 (mixed precision, float32
  # variables). Empty: bfloat16 on TPU (the Model Garden default), float32
  # elsewhere.
  dtype: Optional[str] = None
  # Dtype of one-hot training labels (use_index_label_in_train false) and of
  # Model Garden records' labels.
  label_dtype: str = 'float32'
  # --- batching and counts ---
  # Global training batch (all replicas).
  train_batch_size: int = 8
  # Global evaluation batch.
  eval_batch_size: int = 8
  # Sliding-window batch of eval (whole_volume) and predict.
  predict_batch_size: int = 8
  # Training steps in all.
  train_steps: int = 100000
  # Training cases per epoch; when set, logs and TensorBoard show epochs.
  # 0: unknown.
  train_item_count: int = 0
  # Evaluate at most this many cases; 0: all records of eval_file_pattern.
  eval_item_count: int = 0
  # --- optimizer ---
  # The optimizer (see train.lr_schedule for the learning rate's course).
  optimizer: str = 'adam'
  # Momentum of the momentum and rmsprop optimizers.
  momentum: float = 0.9
  # Peak learning rate.
  init_learning_rate: float = 0.00005
  # exponential schedule: steps per decay by lr_decay_rate.
  lr_decay_steps: int = 100000
  # exponential schedule: factor per lr_decay_steps.
  lr_decay_rate: float = 0.5
  # --- input and model ---
  # Training patch size (2 or 3 values), each divisible by the model's
  # stride on its axis (2**(levels - 1), or the product of
  # model.pool_sizes).
  input_image_size: list[int] = field(default_factory=lambda: [128, 128, 128])
  # Image channels (modalities).
  num_channels: int = 1
  # TPU spatial partitioning: [1, *spatial splits, 1]; one replica spans
  # prod(splits) TPU cores and each core holds one tile of every volume.
  input_partition_dims: Optional[list[int]] = None
  # The same for the evaluation step's data.eval_image_size volumes; the
  # product must equal input_partition_dims'. Empty: input_partition_dims.
  eval_input_partition_dims: Optional[list[int]] = None
  # With partitioning: XLA's SPMD partitioner (one program for all cores of
  # a replica; TensorFlow suggests it when activations dwarf the parameters,
  # as in 3D) instead of the older MPMD one.
  spmd_xla_partitioning: bool = True
  # Up-sampling by transposed convs; false: nearest up-sampling.
  deconvolution: bool = True
  # Output classes (mask channels for sigmoid models).
  num_classes: int = 3
  # unet3d: filters of the first level (f, 2f per level, doubling);
  # unet3plus: the paper's widths scaled by num_base_filters / 64.
  num_base_filters: int = 32
  # unet3d levels (resolutions), when model.filters is empty.
  depth: int = 4
  # The Model Garden's 0.5 was never applied by its model; 0.0 keeps that.
  dropout_rate: float = 0.0
  # Decoder levels with a segmentation head (1: the final head only).
  num_segmentation_levels: int = 1
  # Batch norm in every conv unit (when model.normalization is empty).
  use_batch_norm: bool = True
  # Only channels_last (TF's CPU 3D convs have no NCDHW kernel; XLA/TPU
  # picks its own layout).
  data_format: str = 'channels_last'
  # --- loss ---
  # Training labels as class indices; false: one-hot of label_dtype.
  use_index_label_in_train: bool = False
  # The loss (see the loss table; options under loss_options).
  loss: str = 'adaptive_dice32'
  # --- run ---
  # Empty: tpu when `tpu` is set, mirrored when GPUs are visible, else cpu.
  distribution_strategy: Optional[str] = None
  # mirrored: a count N uses the first N visible GPUs (0: all of them); a
  # list uses those GPU ids (--num_gpus=0,2,3).
  num_gpus: Union[int, list[int]] = 0
  # TPU name or address (Cloud TPU).
  tpu: Optional[str] = None
  # Seeds Python, numpy, TF and the input pipeline. Empty: unseeded.
  seed: Optional[int] = None
  # Deterministic TF ops and input order (with seed: repeatable runs).
  deterministic: bool = False
  # --- fine-tuning (the Model Garden's keys) ---
  # Start training from another run's weights: a checkpoint prefix
  # (.../ckpt-N), a run folder (its latest checkpoint) or an exported
  # SavedModel folder. Only when model_dir has no checkpoint (resume wins).
  init_checkpoint: Optional[str] = None
  # What init_checkpoint restores: all (every layer whose name and shape
  # match; a head of another num_classes starts fresh) or encoder (the enc*
  # and pool* layers; backbone is the Model Garden's name for it).
  init_checkpoint_modules: str = 'all'
  # --- groups ---
  model: ModelConfig = field(default_factory=ModelConfig)
  data: DataConfig = field(default_factory=DataConfig)
  loss_options: LossConfig = field(default_factory=LossConfig)
  metrics: MetricsConfig = field(default_factory=MetricsConfig)
  train: TrainConfig = field(default_factory=TrainConfig)
  inference: InferenceConfig = field(default_factory=InferenceConfig)
  predict: PredictConfig = field(default_factory=PredictConfig)
  export: ExportConfig = field(default_factory=ExportConfig)
  plan: PlanConfig = field(default_factory=PlanConfig)


# Keys of the Model Garden config that mean nothing here; accepted and ignored
# so that its YAML files load, but named in a warning.
LEGACY_IGNORED_KEYS = frozenset({
    'tpu_config', 'use_bfloat16', 'train_epochs', 'eval_steps',
    'num_steps_per_eval', 'min_eval_interval', 'eval_timeout', 'strategy_type',
})

# Values of keys that no registry owns. Models, losses, optimizers and
# learning-rate schedules own their names and their checks (data_format is a
# model key: `unet3d.models.check_model_config` checks it); see
# `unet3d.config.validation.validate`.
CHOICES = {
    'dtype': (None, 'float32', 'bfloat16', 'float16'),
    'label_dtype': ('float32', 'bfloat16', 'float16', 'int32', 'int64',
                    'uint8'),
    'distribution_strategy': (None, 'tpu', 'mirrored', 'multi_worker', 'cpu'),
    'init_checkpoint_modules': ('all', 'encoder', 'backbone'),
    'data.record_format': ('unet3d', 'model_garden'),
    'data.eval_mode': ('center_crop', 'whole_volume'),
    'metrics.empty_class': ('one', 'exclude'),
    'metrics.empty_masks': (None, 'fixed', 'nan'),
    'metrics.hd95': ('max_directed', 'pooled'),
    'metrics.surface_weighting': ('area', 'voxel'),
    'inference.weighting': ('gaussian', 'constant'),
    'predict.preprocessing': ('dataset_json', 'none'),
    'predict.save_probabilities': ('none', 'nifti', 'hdf5'),
    'export.format': ('saved_model', 'onnx', 'openvino'),
}


def value_at(cfg: Config, dotted: str) -> Any:
  """The value of a dotted key, e.g. `model.name`."""
  obj = cfg
  for part in dotted.split('.'):
    obj = getattr(obj, part)
  return obj
