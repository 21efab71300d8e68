"""The schema and defaults of every config: the paper's setting (InFlow trained on CIFAR-10,
evaluated against SVHN, CelebA, MNIST, Fashion-MNIST). Every other config derives from
`get_config()` here, and a config with a key this one lacks is an error
(`inflow_jax.app.config_checks.check_config_keys`).

`get_config()` composes one function per group (`model_config()`, `data_config()`, ...).

Optimiser as in the original: Adam(lr 1e-4, betas (0.8, 0.99), eps 1e-8) with L2 weight decay 2e-5
added to the gradient (PyTorch's `Adam(weight_decay=...)`, not AdamW).
"""

import ml_collections


def get_attack_config() -> ml_collections.ConfigDict:
  """Attack settings (L-infinity, pixel units of [0, 1] images)."""
  return ml_collections.ConfigDict(
    dict(
      # classifier attacks on the in-distribution test images. 32/255 is there because PGD at 8/255
      # barely lowers the accuracy of a classifier of the smooth, upsampled 8x8 digits, while 32/255
      # breaks it; on CIFAR-10, 8/255 already breaks it (measurements: docs/results.md).
      epsilons=(1 / 255, 2 / 255, 8 / 255, 32 / 255),
      num_steps=10,  # PGD steps
      step_size=ml_collections.config_dict.placeholder(float),  # None: 2.5 * epsilon / num_steps
      random_start=True,
      batch_size=250,  # images per attacked batch
      max_images=ml_collections.config_dict.placeholder(int),  # None: the whole test split
      # adaptive attacks on the detector: these OOD sets (None: config.data.ood), at this epsilon
      adaptive_ood=ml_collections.config_dict.placeholder(tuple),
      adaptive_epsilon=8 / 255,
      # PGD of the adaptive attacks (None: num_steps, and step_size or its rule); a flow's density
      # is sharp: small steps and many of them (the best iterate is kept,
      # `inflow_jax.adversarial.attacks.pgd`)
      adaptive_num_steps=ml_collections.config_dict.placeholder(int),
      adaptive_step_size=ml_collections.config_dict.placeholder(float),
      # 'log_likelihood', 'mmd' and (attention.kind 'conformal' / 'combined') 'conformal' (PNG
      # lengths held fixed), 'conformal_surrogate' (PNG lengths through a differentiable surrogate),
      # (attention.kind 'combined') 'mean_shift' (the statistic of the mean-shift test), (with
      # encoder.enabled) 'two_view' (the pixel and semantic views' smoothed Fisher statistic)
      adaptive_targets=("log_likelihood", "mmd"),
    )
  )


def model_config() -> ml_collections.ConfigDict:
  """`config.model`: the keyword arguments of `inflow_jax.model.InFlow(**config.model)`."""
  return ml_collections.ConfigDict(
    dict(
      num_blocks=2,  # attention-gated coupling blocks, each followed by a fixed permutation
      width=256,  # hidden channels of the conv3x3-ReLU-conv3x3 subnets
      clamp=2.0,  # soft clamp s = clamp * 0.636 * atan(raw)
      permutation_seed=0,  # seed of the fixed channel permutations
      glow=False,  # beyond the paper: ActNorm + invertible 1x1 conv before each coupling
      num_scales=1,  # beyond the paper: > 1 gives a multi-scale (squeeze + split) flow
      paper_compat=False,  # True: the original's log-det (not multiplied by the attention)
      zero_init=False,  # beyond the paper: zero last subnet conv (each coupling starts as identity)
    )
  )


def data_config() -> ml_collections.ConfigDict:
  """`config.data`: the datasets and splits (names as `inflow_jax.data.load_split` takes them)."""
  return ml_collections.ConfigDict(
    dict(
      train="cifar10",
      train_split="train",
      # the in-distribution test images, and held-out in-distribution images (of `train`'s dataset,
      # in neither the training nor the test images) for the typicality baseline
      test="cifar10",
      test_split="test[1000:]",
      heldout_split="test[:1000]",
      ood=("svhn_cropped", "celeb_a", "mnist", "fashion_mnist"),
      ood_split="test",
      data_dir=ml_collections.config_dict.placeholder(str),
      image_size=32,
      max_eval_images=ml_collections.config_dict.placeholder(int),
      # beyond the paper: in-distribution images of `test`'s dataset, in neither the training, the
      # test nor the held-out images, that calibrate the conformal attention (attention.kind)
      calibration_split=ml_collections.config_dict.placeholder(str),
      # optional, with calibration_split: more such images (disjoint from it) that the conformal
      # density is fitted on instead of the reference images (None: the reference images)
      density_split=ml_collections.config_dict.placeholder(str),
      # None, or a JPEG round trip at this quality that every set goes through after loading (and
      # the saved detector applies before scoring): compares sets from different pipelines fairly
      jpeg_quality=ml_collections.config_dict.placeholder(int),
    )
  )


def train_config() -> ml_collections.ConfigDict:
  """`config.train`: the flow's optimiser, loss, logging, checkpoints and distribution."""
  return ml_collections.ConfigDict(
    dict(
      num_steps=200 * 100,  # 200 epochs x 100 steps
      batch_size=250,
      optimizer="adam",  # 'adam' (PyTorch's, coupled L2) or 'sgd' (Nesterov momentum b1)
      learning_rate=1e-4,
      b1=0.8,
      b2=0.99,
      eps=1e-8,
      weight_decay=2e-5,  # L2 added to the gradient (coupled), as torch.optim.Adam
      # beyond the paper (inflow_jax.training.optimizer): linear warm-up, then 'constant', 'cosine'
      # decay to 0 at num_steps, or 'wsd' (constant, then linear to 0 over the last decay_steps);
      # global-norm clipping; an EMA of the parameters, used for evaluation; skip_factor: skip steps
      # whose gradient norm is non-finite or above skip_factor x its running mean (loss spikes)
      warmup_steps=0,
      schedule="constant",
      decay_steps=0,
      clip_norm=ml_collections.config_dict.placeholder(float),
      ema_decay=ml_collections.config_dict.placeholder(float),
      skip_factor=ml_collections.config_dict.placeholder(float),
      # 'paper': mean(0.5 |z|^2 - log_det) / 3 (the original); 'per_dim': / (H*W*C); 'bpd': bits/dim
      # of the 8-bit image, uniformly dequantized with fresh noise every step
      loss="paper",
      # held-out bits/dim every eval_every steps (0: never) on eval_data (None: data.train) split
      # eval_split (None: data.heldout_split), the first eval_max_images, dequantized with a fixed
      # seed
      eval_every=0,
      eval_data=ml_collections.config_dict.placeholder(str),
      eval_split=ml_collections.config_dict.placeholder(str),
      eval_max_images=1000,
      log_every=100,
      checkpoint_every=1000,
      keep_checkpoints=3,
      distributed=False,  # True: jax.distributed.initialize() before anything else
      # jax.distributed.initialize arguments; None: detected from the cluster environment.
      coordinator_address=ml_collections.config_dict.placeholder(str),
      num_processes=ml_collections.config_dict.placeholder(int),
      process_id=ml_collections.config_dict.placeholder(int),
    )
  )


def attention_config() -> ml_collections.ConfigDict:
  """`config.attention`: the gate (the paper's MMD test, or the conformal / combined gates)."""
  return ml_collections.ConfigDict(
    dict(
      n_reference=5000,
      n_permutations=100,
      level=0.05,
      sigma=ml_collections.config_dict.placeholder(float),  # None: median heuristic
      encoder_seed=0,
      encoder_path=ml_collections.config_dict.placeholder(str),  # original encoder .npz
      # what the MMD test embeds images with: 'random' (the untrained encoder above, the paper's)
      # or, beyond the paper, 'trained' (the features of config.encoder's trained encoder)
      encoder="random",
      # 'mmd' (the paper's gate), or beyond the paper 'conformal' / 'combined' (inflow_jax.gates:
      # per-image conformal p-values calibrated on data.calibration_split, their batch test, and
      # that test combined with the MMD test); the evaluation reports the MMD gate beside them
      kind="mmd",
      batch_test="auto",  # 'auto' | 'cauchy' | 'fisher' | 'simes' (inflow_jax.gates.p_values)
      combination="bonferroni",  # 'bonferroni' | 'cauchy'
      # Gaussian-mixture components of the per-image density; None: 'auto', chosen by held-out
      # likelihood (inflow_jax.gates.density)
      n_components=ml_collections.config_dict.placeholder(int),
      # training images the density is fitted on (drawn with the reference images' seed, so they
      # include them); None: the reference images. Not with data.density_split.
      n_density=ml_collections.config_dict.placeholder(int),
      # 'combined': principal components of the mean-shift test of a batch's mean in whitened pixel
      # space (inflow_jax.gates.mean_shift), fitted on the reference images and permuted against
      # the calibration images; fewer than attention.n_reference. 0 (or None in a config file): the
      # gate without that test
      mean_shift_components=ml_collections.FieldReference(64, field_type=int),
    )
  )


def eval_config() -> ml_collections.ConfigDict:
  """`config.eval`: the evaluation protocols and baselines."""
  return ml_collections.ConfigDict(
    dict(
      batch_size=250,
      protocols=("paper", "strict", "mixed"),
      baselines=True,  # likelihood, paper score at a=1, input complexity, typicality test
      mixed_n_batches=20,
      n_bootstrap=1000,  # typicality thresholds
      mixed_rhos=(0.1, 0.25, 0.5, 1.0),  # OOD fraction; 0 = exactly one OOD image per batch
      mixed_batch_sizes=(10, 25, 50, 100, 250),
      # OOD sets reported as near-OOD in the report's averages (OpenOOD's grouping); the rest: far
      near_ood=(),
    )
  )


def adversarial_config() -> ml_collections.ConfigDict:
  """`config.adversarial`: adversarial sets in the report
  (inflow_jax.adversarial.evaluation.evaluate_adversarial).

  A small CNN classifier is trained on data.train (needs labels), PGD against it perturbs the test
  images, and adaptive attacks perturb the OOD sets; all are scored as OOD sets (paper, strict,
  baselines).
  """
  attack = get_attack_config()
  attack.epsilons = (1 / 255, 2 / 255, 8 / 255)  # on CIFAR-10, 8/255 already breaks the classifier
  return ml_collections.ConfigDict(
    dict(
      enabled=False,
      seed=0,  # the classifier's initialisation and batch order
      # inflow_jax.adversarial.classifier.Classifier(**config.adversarial.model)
      model=dict(num_classes=10, features=(32, 64), hidden=128),
      # the classifier's training: the flow's optimiser (inflow_jax.training.step), its own settings
      train=dict(
        num_steps=1500,
        batch_size=100,
        optimizer="adam",
        learning_rate=1e-3,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        warmup_steps=0,
        schedule="constant",
        decay_steps=0,
        clip_norm=ml_collections.config_dict.placeholder(float),
        ema_decay=ml_collections.config_dict.placeholder(float),
        skip_factor=ml_collections.config_dict.placeholder(float),
      ),
      attack=attack,
    )
  )


def encoder_config() -> ml_collections.ConfigDict:
  """`config.encoder`: the in-distribution encoder (`inflow_jax.model.ClassifierEncoder`) trained by
  the job on the training images and labels (RotPred: classes + rotations; no labels: rotations),
  and its SGD recipe (`inflow_jax.training.encoder`)."""
  return ml_collections.ConfigDict(
    dict(
      enabled=False,
      # inflow_jax.model.ClassifierEncoder(**config.encoder.model). The recipe is airbench's
      # (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"), in per-mean-loss units:
      # a frozen whitening stem, dirac-initialised convs, batch norm without a scale and with fast
      # running averages, logits / 9; Nesterov SGD, momentum 0.85, learning rate 11.5 B / 7850
      # (airbench's 11.5 per 1024 summed losses), coupled weight decay 0.0153 / 11.5, batch-norm
      # biases at 64x the learning rate, lookahead every 5 steps, a triangular schedule peaking at
      # 20%; with a skip in each block and RotPred's rotations (better OOD features than airbench's
      # own network, measured: docs/results.md)
      model=dict(
        num_classes=10,
        stem_width=32,  # (whiten False only)
        widths=(48, 192, 192),
        whiten=True,
        whiten_components=12,
        dirac=True,
        zero_init_heads=False,
        bn_momentum=0.4,
        bn_scale=False,
        logit_scale=1 / 9,
        residual=True,
      ),
      label_smoothing=0.2,
      rotation_weight=0.5,  # weight of the rotation-prediction loss
      rotation_fraction=0.25,  # share of a batch also passed turned by k * 90 degrees (RotPred)
      translate=2,  # random translation (pixels, reflected) of the augmentation; 0: flips only
      # the semantic view's scores (inflow_jax.gates.semantic): 'auto' ('vim+energy+rotation',
      # less an untrained rotation head, with labels; else 'feature_flow') or names joined by '+'
      semantic_score="auto",
      flip_average=True,  # outputs averaged with the mirror image's (2x the encoder's time)
      train=dict(
        optimizer="sgd",
        num_steps=1758,  # 9 epochs of 50,000 images
        batch_size=256,
        learning_rate=0.375,
        b1=0.85,  # Nesterov momentum
        b2=0.999,  # (Adam only)
        eps=1e-8,  # (Adam only)
        weight_decay=0.0153 / 11.5,
        norm_bias_lr_scale=64.0,
        lookahead_every=5,
        warmup_steps=352,
        schedule="wsd",
        decay_steps=1406,  # linear decay to 0 after the warm-up
        clip_norm=ml_collections.config_dict.placeholder(float),
        ema_decay=ml_collections.config_dict.placeholder(float),
        skip_factor=ml_collections.config_dict.placeholder(float),
        log_every=25,
        eval_every=195,
        checkpoint_every=100,
        keep_checkpoints=2,
      ),
    )
  )


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # A pretrained original (PyTorch) state dict .npz/.pt: when set, run.py loads it with
  # inflow_jax.model.torch_checkpoint.load_reference_checkpoint and does not train.
  config.checkpoint_path = ml_collections.config_dict.placeholder(str)
  config.model = model_config()  # inflow_jax.model.InFlow(**config.model)
  config.data = data_config()
  config.train = train_config()
  config.attention = attention_config()
  config.eval = eval_config()
  config.adversarial = adversarial_config()
  config.encoder = encoder_config()
  return config
