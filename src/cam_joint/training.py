"""`cam-joint train`: an Accelerate training loop that reads top to bottom (in the style of Accelerate's
`*_no_trainer.py` examples). The same command runs on one CPU, one GPU, or many processes (`torchrun` /
`accelerate launch`), with mixed precision, gradient accumulation, checkpoint/resume and progress bars.

With no arguments it trains the `cam` variant on the built-in synthetic birds with a small encoder fine-tuned from
random weights (no download), in a few minutes on a 2-core CPU. With a frozen encoder (`--freeze-encoder`, the
paper's default with ImageNet weights), the encoder's feature maps are computed once into a feature cache and
training never runs the encoder again.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch
from transformers import get_scheduler

from .data import DATASETS, registered_protocols
from .data.synthetic_backgrounds import SHIFTED_SPLIT
# Re-exported: the loop's data and model set-up live in their own modules, `training.X` keeps working.
from .training_data import (SYNTHETIC_DEFAULTS, CaptionedImages, cached_features, concept_targets,  # noqa: F401
                            has_accelerator, load_training_data, make_train_loader)
from .training_model import (CONFIG_OPTIONS, DERIVED_FIELDS, SYNTHETIC_ENCODER,  # noqa: F401
                             build_model_and_processor, check_encoder_is_meaningful, init_from_checkpoint,
                             prepare_cam_targets, transfer_weights)

logger = logging.getLogger("cam_joint.train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", help="a hub_configs/*.json file (model settings); command-line options override it")
    add("--variant", choices=["cnn", "lrcn", "intermediate", "cam", "semantic"], help="default: cam")
    add("--conditioning", choices=["every_step", "init_state", "first_step"])
    add("--cam-gradient-mode", choices=["exact", "first_order"])
    add("--cam-loss-weight", type=float, help="weight of L_cam (default 1)")
    add("--cam-method", help="gradcam (default), hirescam or gradcam++: the maps of the loss and of every picture")
    add("--cam-predicted-targets", choices=["predicted", "answer"],
        help="the 'p' targets of eq. 6: the model's own predictions (default, the paper) or the answers")
    add("--cam-caption-target", choices=["sum", "mean", "discriminative"],
        help="caption score: sum (default) or mean log-probability, or discriminative (each word weighted by its "
             "positive PMI with the class in the training captions)")
    add("--cam-similarity", choices=["cosine", "pearson"],
        help="how eq. 6 compares two maps: cosine (default, the paper) or pearson (correlation; no credit for flat maps)")
    guide = parser.add_mutually_exclusive_group()
    guide.add_argument("--cam-teacher", dest="cam_guide", choices=["mutual", "captioner"],
                       help="captioner: L_cam pulls the classifier's map toward the captioner's (detached: a one-way "
                            "teacher); mutual (default): eq. 6, both maps toward each other")
    guide.add_argument("--cam-mask-guidance", dest="cam_guide", action="store_const", const="mask",
                       help="the oracle: L_cam pulls the classifier's map toward the ground-truth deciding-parts mask "
                            "(datasets with part_mask and discriminative_parts: the synthetic birds)")
    add("--cam-trains", choices=["intermediate", "all"],
        help="what L_cam trains: intermediate (default; f_medi only, Algorithm 1) or all (heads and the encoder too)")
    add("--cam-guidance-loss", choices=["cosine", "evidence"],
        help="with --cam-teacher captioner / --cam-mask-guidance: cosine (default; 1 - similarity of the answer "
             "class's map) or evidence (every class's signed evidence outside the guide)")
    add("--encoder-feature-stage", type=int,
        help="read the CAM's feature map from this timm feature stage (later stages pruned)")
    add("--encoder-kwargs", type=json.loads,
        help='extra timm.create_model arguments as JSON, e.g. \'{"output_stride": 8}\' for finer maps')
    add("--dataset", default="synthetic", help=" | ".join(DATASETS) + " | a Hub dataset id")
    add("--data-dir", help="the dataset's original folder (cub, flowers)")
    add("--protocol", default="official", choices=registered_protocols())
    add("--synthetic-classes", type=int, help=f"synthetic data: classes (default {SYNTHETIC_DEFAULTS['num_classes']})")
    add("--synthetic-per-class", type=int,
        help=f"synthetic data: training images per class (default {SYNTHETIC_DEFAULTS['train_per_class']})")
    add("--synthetic-distractors", type=int, default=0, metavar="N",
        help="synthetic data: N non-discriminative parts per image painted in saturated colours (0-8), so that "
             "only the right parts decide the class")
    add("--synthetic-background-bias", type=float, metavar="P",
        help="synthetic data: the shortcut testbed. Each class gets a background of its own, shown by a fraction P "
             "(0-1) of its train/validation/test images (the rest show another class's); adds a test_shifted split "
             "whose backgrounds ignore the class")
    add("--synthetic-shifted-per-class", type=int, metavar="N",
        help="synthetic data with --synthetic-background-bias: test_shifted images per class (default 100)")
    add("--encoder", help="timm model name (default for synthetic data: resnet10t at output stride 8, read from "
                          "layer3; else the config's)")
    add("--encoder-pretrained", action="store_true", help="start the encoder from timm's ImageNet weights (download)")
    add("--encoder-weights", metavar="PATH",
        help="start the encoder from a local timm checkpoint: a .safetensors/.pth/.bin file or a folder with timm's "
             "model.safetensors + config.json (no download)")
    add("--allow-random-frozen-encoder", action="store_true",
        help="train heads on a frozen encoder that has no pretrained weights (meaningless features: for tests)")
    freeze = parser.add_mutually_exclusive_group()
    freeze.add_argument("--freeze-encoder", dest="freeze_encoder", action="store_true", default=None)
    freeze.add_argument("--train-encoder", dest="freeze_encoder", action="store_false")
    add("--image-size", type=int, help="input size (default: the encoder's; 96 for synthetic data)")
    add("--intermediate-size", type=int)
    add("--num-concepts", type=int, help="variant semantic: K, the most frequent caption words predicted as concepts "
                                         "(default 1000, at most the vocabulary's words)")
    add("--hidden-size", type=int)
    add("--word-embedding-size", type=int)
    add("--output-dir", default="outputs/cam-joint")
    add("--epochs", type=int, default=4)
    add("--max-steps", type=int, help="stop after this many optimizer steps (overrides --epochs)")
    add("--batch-size", type=int, default=32)
    add("--eval-batch-size", type=int, default=64)
    add("--optimizer", default="adamw", choices=["adamw", "sgd"], help="the paper: sgd with --lr 0.1")
    add("--lr", type=float, default=2e-3)
    add("--weight-decay", type=float, default=1e-4)
    add("--warmup-steps", type=int, default=20)
    add("--lr-scheduler-type", default="cosine", help="any of transformers' get_scheduler names (cosine, linear, "
                                                      "constant_with_warmup, ...)")
    add("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    add("--gradient-accumulation-steps", type=int, default=1)
    add("--seed", type=int, default=0)
    add("--checkpointing-steps", type=int, default=0, help="save_state every N steps (0: only at the end)")
    add("--resume", nargs="?", const="latest", help="resume from a checkpoint folder (default: the latest)")
    add("--init-from", help="start from a saved model (pre-train on one dataset, fine-tune on another)")
    add("--stage1-epochs", type=float, default=0.0,
        help="variant semantic, two-stage training: for this many epochs (fractions allowed) the CNN learns the "
             "concepts and the LSTM learns from the GROUND-TRUTH concept vectors, independently; then jointly")
    add("--scst-after-epochs", type=float, default=None,
        help="self-critical sequence training (CIDEr-D reward, greedy baseline) from this epoch on (fractions "
             "allowed); cross-entropy before it. Default: off")
    add("--num-workers", type=int, default=0)
    add("--max-caption-length", type=int, default=40)
    add("--cache-dir", help="feature cache folder (frozen encoder); default OUTPUT_DIR/../feature-cache")
    add("--train-split", default="train", help="e.g. caption_train for the etri2020 captioning protocol")
    add("--eval-split", default="test")
    add("--no-caption-metrics", action="store_true", help="skip BLEU/METEOR/ROUGE/CIDEr (they need Java)")
    add("--push-to-hub", metavar="REPO_ID")
    add("--as-space", action="store_true",
        help="make the output folder a Gradio Space too (app.py, requirements.txt, sdk front matter) and push it as "
             "a Space")
    add("--report-to", default=None, help="Accelerate trackers, e.g. tensorboard or trackio (local: TRACKIO_DIR)")
    add("--skip-bad", action="store_true", help="skip (and report) missing or damaged images and caption files")
    add("--args-from", metavar="TRAINING_ARGS_JSON",
        help="repeat a run: every option (and the model settings) from its training_args.json; --output-dir, "
             "--resume and --push-to-hub stay this command's")


def main(args: argparse.Namespace) -> int:
    from accelerate.utils import set_seed

    from .progress import progress_bar

    if args.args_from:
        args = repeat_args(args)
    output_dir = Path(args.output_dir)
    accelerator = make_accelerator(args, output_dir)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    set_seed(args.seed)

    # 1. Data: a DatasetDict with image / label / captions columns.
    dataset, data_spec = load_training_data(args)
    if args.train_split not in dataset:
        raise ValueError(f"--train-split {args.train_split!r} is not a split of {args.dataset}: {sorted(dataset)}")
    train_split = dataset[args.train_split]
    # The fallback is the last in-distribution split (test_shifted, the shortcut testbed's, is evaluated on its own).
    eval_split = dataset[args.eval_split] if args.eval_split in dataset else \
        dataset[[name for name in dataset if name != SHIFTED_SPLIT][-1]]
    shifted_split = dataset[SHIFTED_SPLIT] if SHIFTED_SPLIT in dataset and args.eval_split != SHIFTED_SPLIT else None

    # 2. Model, tokenizer, processor.
    model, processor = build_model_and_processor(args, train_split, train_split.features["label"].names)
    if args.encoder_weights or args.encoder_pretrained:
        model.load_pretrained_encoder(args.encoder_weights)
    config = model.config
    check_encoder_is_meaningful(args, config)
    check_schedule_options(args, config)
    prepare_cam_targets(model, processor, train_split, args.dataset)

    # 3. Batches: pixels, or cached feature maps when the encoder is frozen.
    train_features = (cached_features(model, processor, train_split, args.train_split, args, accelerator)
                      if config.freeze_encoder else None)
    train_data = CaptionedImages(train_split, processor, config.max_caption_length, args.seed,
                                 features=train_features,
                                 num_concepts=config.num_concepts if config.variant == "semantic" else 0,
                                 guide_masks=config.uses_cam_loss and config.cam_guide == "mask")
    train_loader = make_train_loader(train_data, args)

    # 4. Optimizer, learning-rate schedule, and the objective's schedule (semantic stage 1, self-critical training).
    optimizer = make_optimizer(args, model)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps / accelerator.num_processes)
    max_steps = args.max_steps or args.epochs * steps_per_epoch
    epochs = math.ceil(max_steps / steps_per_epoch)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps,
                              num_training_steps=max_steps)
    objective = TrainingObjective.from_args(args, config, processor, train_data, steps_per_epoch)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)

    # 5. Resume: weights, optimizer, schedule and RNG states, then skip the batches already seen.
    step, start_epoch, skip_batches = 0, 0, 0
    checkpoint = resolve_checkpoint(args.resume, output_dir) if args.resume else None
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        step = int(json.loads((checkpoint / "progress.json").read_text())["step"])
        start_epoch, done_in_epoch = divmod(step, steps_per_epoch)
        skip_batches = done_in_epoch * args.gradient_accumulation_steps
        logger.info("resumed from %s at step %d", checkpoint, step)
    if args.report_to:
        accelerator.init_trackers("cam-joint", config={k: v for k, v in vars(args).items()
                                                       if isinstance(v, (int, float, str, bool))})

    # 6. The loop: one scalar, one backward per step, whatever the objective.
    core = accelerator.unwrap_model(model)
    progress = progress_bar(total=max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="train")
    run_log = RunLog(accelerator, progress)
    model.train()
    for epoch in range(start_epoch, epochs):
        train_data.epoch = epoch
        train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, skip_batches) if skip_batches else train_loader
        skip_batches = 0
        for batch in loader:
            with accelerator.accumulate(model):
                loss, parts = objective(model, core, batch, step)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            step += 1
            run_log.step(step, parts, scheduler.get_last_lr()[0])
            if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, output_dir / "checkpoints" / f"step_{step}", step)
            if step >= max_steps:
                break
        run_log.end_epoch(epoch, step)
        if step >= max_steps:
            break
    progress.close()

    # 7. Save the model (remote code, safetensors), evaluate, write the card and pictures.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model).eval()
        output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        run = resolved_args(args, model.config, processor, data_spec, accelerator.num_processes)
        (output_dir / "training_args.json").write_text(json.dumps(run, indent=2, default=str))
        metrics = finish_run(model, processor, eval_split, args, output_dir, shifted_split=shifted_split)
        logger.info("metrics: %s", json.dumps(metrics))
        run_log.metrics(metrics, step)
        if args.push_to_hub:
            from .hub import push_to_hub
            logger.info("pushed: %s", push_to_hub(output_dir, args.push_to_hub, space=args.as_space))
    accelerator.end_training()
    return 0


class RunLog:
    """What a run reports as it goes: the progress bar's losses, and for the trackers (`--report-to`) every step's
    losses and learning rate (`train/*`), each epoch's mean losses (`epoch/*`) and the final evaluation (`eval/*`)."""

    def __init__(self, accelerator, progress):
        self.accelerator, self.progress = accelerator, progress
        self.sums: dict[str, float] = {}
        self.count = 0

    def step(self, step: int, parts: dict[str, float], lr: float) -> None:
        # The postfix is drawn with the next update (refresh=True would redraw every step, even in a log file).
        self.progress.set_postfix({k.replace("_loss", ""): f"{v:.3f}" for k, v in parts.items()}, refresh=False)
        self.progress.update(1)
        self.accelerator.log({f"train/{k}": v for k, v in parts.items()} | {"lr": lr}, step=step)
        for name, value in parts.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1

    def end_epoch(self, epoch: int, step: int) -> None:
        if self.count:
            means = {f"epoch/{k}": v / self.count for k, v in self.sums.items()}
            self.accelerator.log(means | {"epoch": epoch + 1}, step=step)
        self.sums, self.count = {}, 0

    def metrics(self, metrics: dict, step: int) -> None:
        numbers = {f"eval/{k}": v for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.accelerator.log(numbers, step=step)


class TrainingObjective:
    """The loss of one step, composed from `losses_cam_joint`. Three phases, by step:

    * joint (the default): the model's own loss, L_class + L_caption [+ L_concept] [+ L_cam];
    * semantic stage 1 (`--stage1-epochs`, Liu et al. 2017, section 3.3): the CNN learns the concepts and the LSTM
      learns from the GROUND-TRUTH concept vectors, independently (the caption loss never reaches the CNN); no L_cam,
      the captioner does not look at the image;
    * self-critical (`--scst-after-epochs`, Rennie et al. 2017): the caption loss becomes the policy gradient of one
      sampled caption per image against the greedy caption's CIDEr-D (`scst_loss`, weighted as the caption loss);
      the other losses train alongside.

    The captioner is called outside the wrapped model's forward in the last two; its parameters still get their
    gradient in the step's single backward, which is all DDP (without unused-parameter search) needs.
    """

    def __init__(self, config, stage1_steps: int = 0, scst_start: int | None = None, reward=None):
        if scst_start is not None and reward is None:
            raise ValueError("self-critical training needs its reward (a SelfCriticalReward)")
        self.config, self.stage1_steps, self.scst_start, self.reward = config, stage1_steps, scst_start, reward

    @classmethod
    def from_args(cls, args, config, processor, train_data, steps_per_epoch: int) -> "TrainingObjective":
        stage1_steps = round(args.stage1_epochs * steps_per_epoch)
        scst_start = None if args.scst_after_epochs is None else round(args.scst_after_epochs * steps_per_epoch)
        reward = None
        if scst_start is not None:
            from .self_critical import SelfCriticalReward

            reward = SelfCriticalReward(processor.tokenizer, train_data.captions)
            logger.info("self-critical training from step %d (CIDEr-D reward, document frequencies of %d training "
                        "images)", scst_start + 1, reward.cider.num_images)
        if stage1_steps:
            logger.info("stage 1 (CNN on concepts, LSTM on ground-truth concepts) for steps 1-%d, then joint",
                        stage1_steps)
        return cls(config, stage1_steps, scst_start, reward)

    def __call__(self, model, core, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, the values to log) for one batch; `model` may be DDP-wrapped, `core` is the model itself."""
        losses, extras = self.losses(model, core, batch, step)
        weight = {"scst_loss": self.config.caption_loss_weight}
        loss = sum(weight.get(name, getattr(self.config, f"{name}_weight", 1.0)) * value
                   for name, value in losses.items())
        return loss, {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}, **extras}

    def losses(self, model, core, batch: dict, step: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """The step's named, unweighted losses, and other values to log."""
        batch = dict(batch)
        image_index = batch.pop("image_index")
        if step < self.stage1_steps:
            return self._stage1(model, core, batch), {}
        if self.scst_start is not None and step >= self.scst_start:
            return self._self_critical(model, core, batch, image_index)
        return _losses_of(model(**batch)), {}

    def _stage1(self, model, core, batch) -> dict[str, torch.Tensor]:
        from .losses_cam_joint import caption_loss, token_log_probs

        input_ids = batch.pop("input_ids")
        out = model(**batch)  # class and concept losses
        concepts = batch["concept_labels"].to(out.image_embeds.dtype)
        caption_logits = core.captioner(input_ids, image_embeds=concepts).logits
        log_probs, mask = token_log_probs(caption_logits, input_ids, self.config.pad_token_id)
        return {**_losses_of(out), "caption_loss": caption_loss(log_probs, mask)}

    def _self_critical(self, model, core, batch, image_index):
        from .losses_cam_joint import cam_loss, self_critical_loss

        cfg = self.config
        input_ids = batch.pop("input_ids")
        out = model(**batch)  # class and concept losses
        sampled, log_probs, mask = core.captioner.decode(out.image_embeds, cfg.max_caption_length, sample=True)
        was_training = core.captioner.training
        core.captioner.eval()  # the baseline is the caption inference would give: eval mode, no graph
        with torch.no_grad():
            greedy = core.captioner.decode(out.image_embeds.detach(), cfg.max_caption_length)[0]
        core.captioner.train(was_training)
        losses = _losses_of(out)
        if cfg.uses_cam_loss and out.feature_maps is not None:
            losses["cam_loss"] = cam_loss(core, out, batch["labels"], input_ids, batch.get("guide_masks"))
        advantage, reward, baseline = self.reward(sampled, greedy, image_index)
        losses["scst_loss"] = self_critical_loss(log_probs, mask, advantage)
        return losses, {"reward": reward.mean().item(), "baseline": baseline.mean().item()}


def _losses_of(out) -> dict[str, torch.Tensor]:
    return {name: getattr(out, name) for name in ("class_loss", "concept_loss", "caption_loss", "cam_loss")
            if getattr(out, name) is not None}


# ---------------------------------------------------------------------------------------------- building blocks
def make_accelerator(args, output_dir: Path):
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    return Accelerator(
        # Accelerate runs several CPU processes (torchrun / accelerate launch) as one job only when told `cpu=True`;
        # without it each process would silently train alone.
        cpu=not has_accelerator(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), automatic_checkpoint_naming=False),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # Every trainable parameter is in every step's graph (variants build only the heads they train; the caption
        # loss is present even for a batch without captions), so DDP needs no unused-parameter search.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
    )


def make_optimizer(args, model) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    return torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)


def resolved_args(args, config, processor, data_spec: dict, num_processes: int) -> dict:
    """What the run really used: every option with the value it took (the config file's or the defaults' where the
    command line was silent), the model settings, the data spec. `--args-from` repeats a run from it alone."""
    run = dict(vars(args))
    run.update({option: getattr(config, field) for option, field in CONFIG_OPTIONS.items()})
    run["preprocessing"] = processor.image_processor.data_config()  # what --image-size (or its default) gave
    run["model_config"] = {k: v for k, v in config.to_dict().items() if k not in DERIVED_FIELDS}
    return {**run, **data_spec, "num_processes": num_processes}


def repeat_args(args):
    """`args` with every option of the recorded run (`--args-from`), except where the results go."""
    path = Path(args.args_from)
    if not path.is_file():
        raise FileNotFoundError(f"--args-from {path}: no such training_args.json")
    recorded = json.loads(path.read_text())
    kept = {"output_dir", "resume", "push_to_hub", "args_from"}
    for key, value in recorded.items():
        if key in vars(args) and key not in kept:
            setattr(args, key, value)
    args.model_settings = recorded.get("model_config")
    return args


def check_schedule_options(args, config) -> None:
    if args.stage1_epochs < 0 or (args.scst_after_epochs is not None and args.scst_after_epochs < 0):
        raise ValueError("--stage1-epochs and --scst-after-epochs must be >= 0")
    if args.stage1_epochs and config.variant != "semantic":
        raise ValueError(f"--stage1-epochs is the semantic variant's two-stage training; the model is "
                         f"variant={config.variant!r} (use --variant semantic)")
    if args.scst_after_epochs is not None and not config.has_captioner:
        raise ValueError(f"--scst-after-epochs trains a captioner; variant={config.variant!r} has none")
    if args.scst_after_epochs is not None and args.scst_after_epochs < args.stage1_epochs:
        raise ValueError(f"--scst-after-epochs {args.scst_after_epochs} falls inside stage 1 (--stage1-epochs "
                         f"{args.stage1_epochs}): self-critical training fine-tunes the joint model, after stage 1")


def save_checkpoint(accelerator, folder: Path, step: int) -> None:
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / "progress.json").write_text(json.dumps({"step": step}))


def resolve_checkpoint(resume: str, output_dir: Path) -> Path:
    if resume != "latest":
        path = Path(resume)
        if not (path / "progress.json").exists():
            raise FileNotFoundError(f"--resume {resume}: no checkpoint there (progress.json missing)")
        return path
    folders = sorted((output_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    folders = [f for f in folders if (f / "progress.json").exists()]
    if not folders:
        raise FileNotFoundError(f"--resume: no checkpoint under {output_dir / 'checkpoints'}")
    return folders[-1]


def caption_word_table(model, processor, classes: int = 20) -> str | None:
    """The model card's table of each class's top caption words, for a discriminative caption score."""
    weights = getattr(model, "caption_word_weights", None)
    if weights is None:
        return None
    from .discriminative_words import top_words, word_table

    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return word_table(labels, top_words(weights, processor.tokenizer, 5), max_classes=classes)


def finish_run(model, processor, eval_split, args, output_dir: Path, shifted_split=None) -> dict:
    """Evaluate (with the shortcut testbed, also on ``test_shifted``: `evaluation.evaluate_shifted`), write
    metrics.json, the CAM pictures and the model card."""
    from .evaluation import WORST_GROUP_KEYS, evaluate_model, evaluate_shifted
    from .hub import write_model_card
    from .inference import save_cam_pictures

    metrics = evaluate_model(model, processor, eval_split, batch_size=args.eval_batch_size,
                             caption_metrics=not args.no_caption_metrics)
    if shifted_split is not None:
        # The worst group is test_shifted's (in-distribution splits have too few images off their class's background).
        metrics = {key: value for key, value in metrics.items() if key not in WORST_GROUP_KEYS}
        metrics.update(evaluate_shifted(model, processor, shifted_split, batch_size=args.eval_batch_size))
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    save_cam_pictures(model, processor, eval_split, output_dir, count=4)
    write_model_card(output_dir, model.config, metrics, training_args=vars(args), dataset_name=args.dataset,
                     space=args.as_space, word_table=caption_word_table(model, processor))
    return metrics
