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
import copy
import json
import logging
import math
import random
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import get_scheduler

from .collator import caption_batch, pick_caption
from .data import DATASETS, registered_protocols
from .data.guide_masks import GUIDE_MASK_COLUMNS, check_guide_mask_columns, deciding_parts_mask
from .data.synthetic_backgrounds import SHIFTED_SPLIT

logger = logging.getLogger("cam_joint.train")

SYNTHETIC_ENCODER = {"encoder_name": "resnet10t", "encoder_kwargs": {"output_stride": 8}, "encoder_feature_stage": 3}
SYNTHETIC_DEFAULTS = {"num_classes": 20, "train_per_class": 200, "validation_per_class": 25, "test_per_class": 25,
                      "image_size": 96}


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


def make_train_loader(train_data: "CaptionedImages", args) -> DataLoader:
    """Shuffled batches. Workers (`--num-workers`) preprocess the next batches while the model trains; the order is
    the sampler's, the same with 0 or N workers (an item and its caption depend on (seed, epoch, index) only).
    Not persistent workers: each epoch's workers must see `train_data.epoch` (the caption choice), which a worker
    kept from the first epoch would not. Default 0: on the 2-core CPU the data path is ~2 % of a step and a worker
    takes a core from the encoder. Pinned memory only with a GPU (it speeds host-to-device copies, nothing else)."""
    workers = args.num_workers
    return DataLoader(train_data, batch_size=args.batch_size, shuffle=True, collate_fn=train_data.collate,
                      num_workers=workers, pin_memory=workers > 0 and has_accelerator())


def make_optimizer(args, model) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    return torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)


def check_encoder_is_meaningful(args, config) -> None:
    """A frozen encoder that was never given pretrained weights computes features of random filters: the heads train
    on noise and nothing says so. Refuse it unless asked for."""
    if (config.freeze_encoder and not (args.encoder_pretrained or args.encoder_weights or args.init_from)
            and not args.allow_random_frozen_encoder):
        raise ValueError(f"the encoder {config.encoder_name!r} is frozen but has no pretrained weights: its features "
                         f"would be those of random filters. Pass --encoder-weights PATH (a local timm checkpoint), "
                         f"--encoder-pretrained (timm's ImageNet weights, downloaded), or --train-encoder; "
                         f"--allow-random-frozen-encoder if this is really meant (tests)")


# Options whose value the model's config decides when the command line leaves them unset: recorded resolved.
_CONFIG_OPTIONS = {"variant": "variant", "conditioning": "conditioning", "cam_gradient_mode": "cam_gradient_mode",
                   "freeze_encoder": "freeze_encoder", "intermediate_size": "intermediate_size",
                   "hidden_size": "hidden_size", "word_embedding_size": "word_embedding_size",
                   "encoder": "encoder_name", "num_concepts": "num_concepts", "cam_loss_weight": "cam_loss_weight",
                   "cam_method": "cam_method", "cam_predicted_targets": "cam_predicted_targets",
                   "cam_caption_target": "cam_caption_target", "cam_similarity": "cam_similarity",
                   "cam_guide": "cam_guide", "cam_guidance_loss": "cam_guidance_loss", "cam_trains": "cam_trains",
                   "encoder_kwargs": "encoder_kwargs",
                   "encoder_feature_stage": "encoder_feature_stage", "encoder_weights": "encoder_weights"}
# Config fields that the data decides (vocabulary, classes) or that only describe the file.
_DERIVED_FIELDS = ("vocab_size", "id2label", "label2id", "auto_map", "architectures", "transformers_version",
                   "model_type", "_name_or_path", "dtype", "torch_dtype", "encoder_channels")


def resolved_args(args, config, processor, data_spec: dict, num_processes: int) -> dict:
    """What the run really used: every option with the value it took (the config file's or the defaults' where the
    command line was silent), the model settings, the data spec. `--args-from` repeats a run from it alone."""
    run = dict(vars(args))
    run.update({option: getattr(config, field) for option, field in _CONFIG_OPTIONS.items()})
    run["preprocessing"] = processor.image_processor.data_config()  # what --image-size (or its default) gave
    run["model_config"] = {k: v for k, v in config.to_dict().items() if k not in _DERIVED_FIELDS}
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


def has_accelerator() -> bool:
    """A GPU (or other torch accelerator) is present."""
    api = getattr(torch, "accelerator", None)  # torch >= 2.6
    return api.is_available() if api is not None else torch.cuda.is_available()


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


def load_training_data(args):
    """The DatasetDict and a JSON-able description that `cam-joint evaluate` can rebuild it from."""
    from .data import load_dataset_by_name

    if args.dataset == "synthetic":
        spec = {**SYNTHETIC_DEFAULTS, "seed": args.seed}
        for key, value in (("image_size", args.image_size), ("num_classes", args.synthetic_classes),
                           ("train_per_class", args.synthetic_per_class),
                           ("distractors", args.synthetic_distractors)):
            if value:  # only what was asked for: earlier runs' recorded specs stay the same
                spec[key] = value
        if args.synthetic_background_bias is not None:  # 0 is a bias too (every background another class's)
            spec["background_bias"] = args.synthetic_background_bias
            if args.synthetic_shifted_per_class is not None:
                spec["shifted_per_class"] = args.synthetic_shifted_per_class
        elif args.synthetic_shifted_per_class is not None:
            raise ValueError("--synthetic-shifted-per-class sizes the test_shifted split, which exists only with "
                             "--synthetic-background-bias")
        return load_dataset_by_name("synthetic", data_dir=args.data_dir, protocol=args.protocol, **spec), \
            {"synthetic": spec}
    options = {"skip_bad": True} if args.skip_bad else {}
    return load_dataset_by_name(args.dataset, data_dir=args.data_dir, protocol=args.protocol, **options), {}


def build_model_and_processor(args, train_split, label_names):
    from . import CamJointConfig, CamJointImageProcessor, CamJointModel, CamJointProcessor, build_caption_tokenizer

    captions = [c for row in train_split["captions"] for c in row]
    if args.init_from:
        return init_from_checkpoint(args, captions, label_names)
    if getattr(args, "model_settings", None):  # --args-from: the recorded run's own settings
        settings = dict(args.model_settings)
    else:
        settings = json.loads(Path(args.config).read_text()) if args.config else {}
    for key in _DERIVED_FIELDS:
        settings.pop(key, None)
    # Every option that sets a config field, except the encoder weights: load_pretrained_encoder records those once
    # they have loaded into the encoder.
    overrides = {field: getattr(args, option) for option, field in _CONFIG_OPTIONS.items()
                 if option != "encoder_weights"}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if args.dataset == "synthetic":
        # Small and fast by default: a frozen RANDOM encoder cannot learn the synthetic birds (no ImageNet weights
        # here), so the default fine-tunes a small one. Its maps are read at stride 8 from layer3 (layer4 pruned):
        # 12x12 at 96 px, fine enough to say which part a map points at, for ~1.2x the cost of the 3x3 ones.
        if "encoder_name" not in settings:
            for key, value in SYNTHETIC_ENCODER.items():
                settings.setdefault(key, value)
        for key, value in {"freeze_encoder": False, "intermediate_size": 256, "hidden_size": 256,
                           "word_embedding_size": 128}.items():
            settings.setdefault(key, value)
    tokenizer = build_caption_tokenizer(captions) if captions else build_caption_tokenizer(["empty"])
    words = len(tokenizer) - len(tokenizer.all_special_ids)
    if settings.get("variant") == "semantic" and settings.get("num_concepts", 1000) > words:
        # A concept beyond the vocabulary would never be active: K is at most the number of caption words.
        logger.info("num_concepts %s > the %d words of the caption vocabulary: using %d",
                    settings.get("num_concepts", 1000), words, words)
        settings["num_concepts"] = words
    settings.update(vocab_size=len(tokenizer), max_caption_length=args.max_caption_length,
                    id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)})
    settings.pop("num_labels", None)
    model = CamJointModel(CamJointConfig(**settings))
    data_config = model.encoder_data_config()
    if args.image_size or args.dataset == "synthetic":
        size = args.image_size or SYNTHETIC_DEFAULTS["image_size"]
        data_config = {**data_config, "input_size": (3, size, size), "crop_pct": 1.0}
    processor = CamJointProcessor(CamJointImageProcessor.from_data_config(data_config), tokenizer)
    return model, processor


def init_from_checkpoint(args, captions, label_names):
    """Fine-tune a saved model on another dataset (Show-and-Tell / ImageCLEF): keep every weight whose meaning
    survives, re-initialise the class head if the label set changed, and map the vocabulary word by word."""
    from . import CamJointModel, CamJointProcessor, build_caption_tokenizer

    source = CamJointModel.from_pretrained(args.init_from)
    source_processor = CamJointProcessor.from_pretrained(args.init_from)
    tokenizer = build_caption_tokenizer(captions)
    source_labels = [source.config.id2label[i] for i in range(source.config.num_labels)]
    config = copy.deepcopy(source.config)
    config.update({"vocab_size": len(tokenizer), "id2label": dict(enumerate(label_names)),
                   "label2id": {n: i for i, n in enumerate(label_names)}})
    config.max_caption_length = max(config.max_caption_length, args.max_caption_length)
    model = CamJointModel(config)
    report = transfer_weights(source, model, source_processor.tokenizer.get_vocab(), tokenizer.get_vocab(),
                              source_labels=source_labels, target_labels=label_names)
    for line in report:
        logger.info("init-from: %s", line)
    return model, CamJointProcessor(source_processor.image_processor, tokenizer)


def transfer_weights(source, target, source_vocab, target_vocab, source_labels, target_labels) -> list[str]:
    """Copy weights from `source` into `target`; rows of word and class matrices are matched by name. Returns the
    report: what was kept, what is new (initialised fresh) and what the checkpoint had that the new data lacks."""
    source_state, report = source.state_dict(), []
    word_rows = [(target_vocab[w], source_vocab[w]) for w in target_vocab if w in source_vocab]
    class_rows = [(i, source_labels.index(n)) for i, n in enumerate(target_labels) if n in source_labels]
    vocab_keys = {"captioner.embed_tokens.weight", "captioner.lm_head.weight", "captioner.lm_head.bias"}
    class_keys = {"classifier.weight", "classifier.bias"}
    with torch.no_grad():
        for name, tensor in target.state_dict().items():
            if name not in source_state:
                report.append(f"{name}: not in the checkpoint, initialised fresh")
            elif name in vocab_keys or name in class_keys:
                rows = word_rows if name in vocab_keys else class_rows
                for new, old in rows:
                    tensor[new] = source_state[name][old]
                kind = "words" if name in vocab_keys else "classes"
                report.append(f"{name}: kept {len(rows)} of {tensor.shape[0]} {kind}, the rest initialised fresh")
            elif source_state[name].shape == tensor.shape:
                tensor.copy_(source_state[name])
            else:
                report.append(f"{name}: shape {tuple(source_state[name].shape)} -> {tuple(tensor.shape)}, "
                              f"initialised fresh")
    for kind, new_names, old_names in (("words", list(target_vocab), list(source_vocab)),
                                       ("classes", list(target_labels), list(source_labels))):
        old_set, new_set = set(old_names), set(new_names)
        added = [n for n in new_names if n not in old_set]
        dropped = [n for n in old_names if n not in new_set]
        report.append(f"{kind}: {len(new_names) - len(added)} kept, {len(added)} added{_examples(added)}, "
                      f"{len(dropped)} of the checkpoint's dropped{_examples(dropped)}")
    return report


def _examples(names: list[str], count: int = 5) -> str:
    if not names:
        return ""
    return " (" + ", ".join(map(str, names[:count])) + (", ..." if len(names) > count else "") + ")"


def prepare_cam_targets(model, processor, train_split, dataset_name: str) -> None:
    """What the CAM loss reads from the training data, fixed at the start: the discriminative caption score's word
    weights (from the training captions and labels), and for the mask oracle a check that the data has masks."""
    config = model.config
    if config.cam_caption_target == "discriminative":
        from .discriminative_words import caption_word_weights

        model.set_caption_word_weights(caption_word_weights(processor.tokenizer, train_split["captions"],
                                                            train_split["label"], config.num_labels))
    if config.uses_cam_loss and config.cam_guide == "mask":
        check_guide_mask_columns(train_split, dataset_name)


class CaptionedImages(Dataset):
    """(image or cached feature map, label, one of its captions) per item. The caption changes every epoch,
    chosen by (seed, epoch, index) so that a resumed run sees exactly the same batches. With `guide_masks`, each item
    also carries its deciding parts' mask (the mask oracle), read from the split whether images or cached features
    feed the model."""

    def __init__(self, split, processor, max_caption_length: int, seed: int, features: torch.Tensor | None = None,
                 num_concepts: int = 0, guide_masks: bool = False):
        self.split, self.processor, self.features = split, processor, features
        self.num_concepts = num_concepts
        self.max_caption_length, self.seed, self.epoch = max_caption_length, seed, 0
        self.labels = split["label"]
        self.captions = split["captions"]
        # Only the mask columns: reading a row of them never decodes the image.
        self.mask_rows = None
        if guide_masks:
            self.mask_rows = split.select_columns(list(GUIDE_MASK_COLUMNS))

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        captions = self.captions[index]
        caption = pick_caption(captions, random.Random(f"{self.seed}-{self.epoch}-{index}"))
        item = {"label": self.labels[index], "caption": caption, "index": index}
        if self.num_concepts:
            item["concepts"] = concept_targets(self.processor.tokenizer, captions, self.num_concepts)
        if self.features is not None:
            item["feature_maps"] = self.features[index].float()
        else:
            item["image"] = self.split[index]["image"]
        if self.mask_rows is not None:
            row = self.mask_rows[index]
            item["guide_mask"] = deciding_parts_mask(self.processor.image_processor, row["part_mask"],
                                                     row["discriminative_parts"])
        return item

    def collate(self, items: list[dict]) -> dict:
        batch = {"labels": torch.tensor([item["label"] for item in items]),
                 "image_index": torch.tensor([item["index"] for item in items])}
        if self.features is not None:
            batch["feature_maps"] = torch.stack([item["feature_maps"] for item in items])
        else:
            batch["pixel_values"] = self.processor.image_processor([item["image"] for item in items])["pixel_values"]
        batch["input_ids"] = caption_batch(self.processor, [item["caption"] for item in items],
                                           self.max_caption_length)
        if self.num_concepts:
            batch["concept_labels"] = torch.stack([item["concepts"] for item in items])
        if self.mask_rows is not None:
            batch["guide_masks"] = torch.stack([item["guide_mask"] for item in items])
        return batch


def concept_targets(tokenizer, captions: list[str], num_concepts: int) -> torch.Tensor:
    """Semantic regularisation's ground truth: which of the K most frequent caption words occur in ANY of the image's
    captions (multi-hot). The vocabulary is ordered by frequency after the 4 special tokens, so concept k is token
    id 4 + k."""
    first = len(tokenizer.all_special_ids)
    targets = torch.zeros(num_concepts)
    for ids in tokenizer(list(captions), add_special_tokens=False)["input_ids"] if captions else []:
        concept_ids = torch.tensor([i - first for i in ids if first <= i < first + num_concepts], dtype=torch.long)
        targets[concept_ids] = 1.0
    return targets


def cached_features(model, processor, split, name, args, accelerator) -> torch.Tensor:
    """The frozen encoder's feature maps for a split, from the on-disk cache (computed once, on the main process)."""
    from .data.feature_cache import FeatureCache, feature_key

    cache = FeatureCache(args.cache_dir or Path(args.output_dir).parent / "feature-cache")
    # output_stride and the feature stage change the features but not the weights: they are part of the key.
    key = feature_key(model.config.encoder_name, model.encoder, processor.image_processor.data_config(),
                      dataset=split, split=name, encoder_kwargs=model.config.encoder_kwargs,
                      encoder_feature_stage=model.config.encoder_feature_stage)

    @torch.no_grad()
    def encode(rows):
        return model.get_feature_maps(processor.image_processor(rows["image"])["pixel_values"])

    with accelerator.main_process_first():
        return cache.get_or_compute(key, split, encode, batch_size=64, desc=f"encoding {name}")


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
