"""The diagnostics record schema (version 1): what `workdir/diagnostics/{train,eval}.jsonl` hold.

One JSON object per line, one line per record period (by default one epoch: a train record and an eval record
at each evaluation, both with the same `step`). Records after a restored checkpoint's step are truncated on
resume, so a file never holds two runs or a step twice. Only process 0 writes.

Every record has:
  schema_version: int (SCHEMA_VERSION)
  kind: 'train' | 'eval'
  step: int          optimizer steps done at the end of the period
  epoch: float       step / steps_per_epoch

Train records (statistics computed inside the jitted train step, aggregated on device over the period):
  first_step: int              first step of the period (exclusive start: the period covers first_step+1..step)
  num_steps: int               steps aggregated
  steps_per_epoch, num_train_steps: int
  peak_learning_rate: float    configured optimizer.learning_rate
  grad_clip_norm: float        configured threshold (0 = no clipping)
  lr_scale: float              plateau / rollback multiplier in force at the end of the period
  num_classes: int
  scalars: {name: Summary} with names
      loss            total training loss (data + regularization term)
      data_loss       cross-entropy (+ Dice for segmentation, + weighted aux heads) as optimized
      reg_loss        weight_decay / 2 * sum of squared decayed (kernel) weights: the L2 penalty the decay
                      implies, reported beside the data term even when the decay is decoupled
      accuracy        training accuracy in train mode (dropout on)
      learning_rate   LR used by the step (schedule * lr_scale)
      grad_norm       global gradient norm before clipping
      clipped         1 when clipping scaled the step, else 0 (mean = clipping fraction)
      nonfinite_grads count of non-finite gradient entries
      skipped         1 when the NaN-skip guard skipped the step
  skipped_steps: int           total skipped steps so far (whole run)
  longest_skip_run: int
  first_nonfinite: null | {step: int, module: str}   first step in the period with a non-finite gradient and
                                                     the first module (sorted path order) holding one
  modules: {path: {grad_norm, param_norm, update_norm, update_ratio: Summary}}
      path = top two levels of the parameter tree joined by '/', e.g. 'color/stage2', 'head/Dense_0';
      update_ratio = update_norm / (param_norm + 1e-12) of the applied update (after clipping, LR, skipping)
  pathways: {name: {grad_norm: Summary, grad_share: Summary}}
      only for models with more than one input pathway (top-level 'color' and 'brightness');
      grad_share = this pathway's squared grad norm / sum over pathways
  activations: {block path: {mean, std, zero_fraction: Summary}}
      sown per block output (after its activation); zero_fraction = fraction of exactly-zero entries
  gates: {gate path: {mean, saturated_fraction: Summary}}
      sigmoid/tanh gates of ConvGRU and attention; saturated = sigmoid outside [0.01, 0.99] (tanh: |x| > 0.98)
  events: [{step: int, kind: 'plateau_cut' | 'rollback', lr_scale: float, message: str}]  in this period

  Summary = {mean: float, min: float, max: float, first: float, last: float} over the period's steps
  (non-finite values stay as NaN / Infinity in the JSON).

Eval records:
  task: 'classification' | 'segmentation'
  loss, accuracy, balanced_accuracy: float
  class_names: [str]
  per_class_accuracy: [float]   recall of each class (pixels for segmentation)
  predicted_histogram: [float]  share of predictions per class
  label_histogram: [float]      share of labels per class
  confusion: [[int]]            [true, predicted] counts (omitted above MAX_CONFUSION_CLASSES classes)
  dice_per_class, iou_per_class: [float]   segmentation only; mean_dice, mean_iou: float
"""

SCHEMA_VERSION = 1
MAX_CONFUSION_CLASSES = 100
TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"
FINDINGS_FILE = "findings.json"
