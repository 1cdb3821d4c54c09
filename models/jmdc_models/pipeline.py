"""Train -> SE-gate channel scoring -> prune -> fine-tune -> export, for one zoo model.

    python -m jmdc_models.pipeline --model alexnet-cifar10 --data cifar-10-jpeg.tar.gz \
        --out OUT/alexnet-cifar10 --device cuda --amp --deadline-seconds 400

Writes into ``--out``:
  package/<model>/manifest.json + keepNNN/*.onnx  (draft manifest: no ONNX Runtime accuracy yet;
                                                   run ``jmdc_models.finalize`` on it)
  weights/<variant>.pt   self-describing checkpoints (layer list, state_dict, kept channels)
  training.json          the training record (also inside the manifest)
  gate_scores.json       mean SE gate value per conv channel
Everything is written as soon as it exists, so a run stopped by its deadline still leaves the
stages it finished.
"""

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import cifar, export, nets, pack, zoo
from . import spec as S
from .train import DeviceData, evaluate, gate_scores, log, train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, choices=sorted(zoo.ZOO))
    p.add_argument("--data", required=True,
                   help="cifar-10-jpeg.tar.gz, a .npz made by jmdc_models.prepare, or the "
                        "cifar-10-batches-bin folder")
    p.add_argument("--test-bin", help="test_batch.bin to evaluate on (default: test split of --data)")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (cuda only)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--min-epochs", type=int, default=1,
                   help="base epochs never cut below this by the deadline")
    p.add_argument("--lr", type=float, default=0.08, help="peak LR of the base run")
    p.add_argument("--schedule", default="onecycle", choices=["onecycle", "cosine"])
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--cutout", type=int, default=0,
                   help="cutout square side in pixels for every training stage (0 = off)")
    p.add_argument("--clip", type=float, default=0.0, help="gradient-norm clipping (0 = off)")
    p.add_argument("--stuck-epoch", type=int, default=4,
                   help="restart the base run once with half the LR if its training loss is "
                        "still near chance after this many epochs (0 = off)")
    p.add_argument("--init-from",
                   help="checkpoint (weights/keep100.pt of an earlier run) the base run continues "
                        "from, instead of a fresh initialisation")
    p.add_argument("--gate-epochs", type=int, default=8)
    p.add_argument("--gate-lr", type=float, default=0.01)
    p.add_argument("--gate-lr-mult", type=float, default=100.0,
                   help="LR multiplier of the fresh SE-gate parameters during gate training")
    p.add_argument("--gate-l1", type=float, default=1.0,
                   help="weight of the mean gate value in the gate-training loss")
    p.add_argument("--ft-epochs", type=int, default=30)
    p.add_argument("--ft-lr", type=float, default=0.04)
    p.add_argument("--kd", type=float, default=0.5,
                   help="distillation weight from the base model during fine-tuning (0 = off)")
    p.add_argument("--ratios", default="1.0,0.75,0.5,0.25")
    p.add_argument("--subset", type=int, default=0, help="use a random training subset (smoke)")
    p.add_argument("--test-subset", type=int, default=0)
    p.add_argument("--deadline-seconds", type=float, default=0,
                   help="wall-clock budget from process start (0 = none)")
    p.add_argument("--deadline-at", type=float, default=0, help="absolute deadline (unix time)")
    p.add_argument("--reserve-seconds", type=float, default=10,
                   help="kept free before the deadline for exports and saving")
    p.add_argument("--no-export", action="store_true", help="save weights only (no ONNX)")
    p.add_argument("--half-weights", action="store_true", help="save state_dicts as float16")
    p.add_argument("--pack-dir", help="after every stage, pack the run into a few flat files "
                                      "here (see jmdc_models.pack)")
    p.add_argument("--pack-budget-mb", type=float, default=64.0,
                   help="total size allowed for this model's packed files")
    p.add_argument("--description", default="")
    p.add_argument("--threads", type=int, default=0)
    return p.parse_args(argv)


def load_data(args):
    d = Path(args.data)
    t = time.time()
    if d.is_dir():
        data = {"train": cifar.read_bin_dir(d, "train"), "test": cifar.read_bin_dir(d, "test")}
    elif d.suffix == ".npz":
        data = cifar.load_npz(d)
    else:
        data = cifar.read_jpeg_tarball(d)
    if args.test_bin:
        data["test"] = cifar.read_bin(args.test_bin)
    log(f"data: {len(data['train'][1])} train / {len(data['test'][1])} test images from {d} "
        f"in {time.time() - t:.1f}s")
    return data


def fmt_s(v):
    return "none" if v is None else f"{v:.0f}s"


class Deadline:
    def __init__(self, args, t_start):
        self.at = None
        if args.deadline_at:
            self.at = args.deadline_at
        elif args.deadline_seconds:
            self.at = t_start + args.deadline_seconds
        self.reserve = args.reserve_seconds

    def left(self):
        if self.at is None:
            return None
        return max(0.0, self.at - time.time() - self.reserve)


def main(argv=None):
    t_start = time.time()
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    deadline = Deadline(args, t_start)
    out = Path(args.out)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    pkg_dir = out / "package" / args.model
    dev = torch.device(args.device)
    amp = args.amp  # bf16 autocast; meant for cuda (on cpu it only exercises the code path)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        try:  # fp32 leftovers (LRN, losses) may use TF32; the API moved between versions
            torch.set_float32_matmul_precision("high")
        except Exception:  # noqa: BLE001
            pass
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    log(f"{args.model}: torch {torch.__version__} on {dev}"
        + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
        + f", amp={amp}, channels_last={args.channels_last}")

    layers, input_shape, classes = zoo.get(args.model)
    data = load_data(args)
    tx, ty = data["train"]
    ex, ey = data["test"]
    if args.subset:
        sel = np.random.RandomState(args.seed).permutation(len(ty))[:args.subset]
        tx, ty = tx[sel], ty[sel]
    if args.test_subset:
        sel = np.random.RandomState(args.seed + 1).permutation(len(ey))[:args.test_subset]
        ex, ey = ex[sel], ey[sel]
    mean, std = cifar.channel_stats(tx)
    mean, std = [round(m, 6) for m in mean], [round(s, 6) for s in std]
    log(f"normalisation mean {mean} std {std}")
    train_d = DeviceData(tx, ty, mean, std, dev, args.channels_last)
    test_d = DeviceData(ex, ey, mean, std, dev, args.channels_last)

    ratios = sorted({float(r) for r in args.ratios.split(",")}, reverse=True)
    pruned_ratios = [r for r in ratios if r < 1.0]
    ft_cost = 1.4 if args.kd else 1.0  # relative epoch cost (teacher forward), rough
    units = {"base": args.epochs * 1.5,  # the base model has priority over the fine-tunes
             "gate": args.gate_epochs * 1.3 if pruned_ratios else 0,
             "ft": sum(args.ft_epochs * ft_cost * (0.5 + 0.5 * r) for r in pruned_ratios)}
    total_units = sum(units.values()) or 1

    recipe = {
        "optimizer": "SGD momentum 0.9 nesterov", "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing, "batch": args.batch,
        "schedule": args.schedule, "base_peak_lr": args.lr, "grad_clip": args.clip or None,
        "augmentation": "random crop 32 from zero padding 4, horizontal flip"
                        + (f", cutout {args.cutout}x{args.cutout}" if args.cutout else "")
                        + " (on device)",
        "amp": "bf16 autocast" if amp else "float32", "channels_last": args.channels_last,
        "channel_selection": "squeeze-and-excitation gates after each conv activation (after "
                             "BN+ReLU when a BN follows), trained with the network from the base "
                             "model; score = mean gate value over the training set; keep the "
                             "round(ratio*C) highest-scoring channels (>= 1); pruned variants "
                             "start from the base weights without gates",
        "gate_epochs": args.gate_epochs, "gate_lr": args.gate_lr,
        "gate_lr_multiplier": args.gate_lr_mult, "gate_l1_on_mean_gate": args.gate_l1,
        "finetune_epochs": args.ft_epochs, "finetune_peak_lr": args.ft_lr,
        "finetune_distillation": {"alpha": args.kd, "temperature": 4.0,
                                  "teacher": "keep100"} if args.kd else None,
    }
    training = {
        "seed": args.seed, "recipe": recipe,
        "base_epochs_planned": args.epochs,
        "train_images": int(len(ty)), "test_images": int(len(ey)),
        "normalization_from": "training set" + (f" subset of {len(ty)}" if args.subset else ""),
        "device": (torch.cuda.get_device_name(dev) if dev.type == "cuda" else
                   f"cpu ({platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} threads)"),
        "torch": torch.__version__,
        "variants": {},
        "timings_s": {},
    }
    desc = args.description or (
        f"{args.model}: trained on CIFAR-10 (JPEG copy), channel-pruned by attention-based "
        f"(SE-gate) channel selection, variants keep {', '.join(str(r) for r in ratios)}")
    manifest = export.manifest_skeleton(args.model, layers, input_shape, classes, mean, std,
                                        zoo.ZOO[args.model]["dataset"], desc, training)

    def save_all():
        (out / "training.json").write_text(json.dumps(training, indent=2) + "\n")
        if not args.no_export:
            pkg_dir.mkdir(parents=True, exist_ok=True)
            (pkg_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if args.pack_dir:
            t = time.time()
            r = pack.pack(out, args.model, args.pack_dir, int(args.pack_budget_mb * pack.MiB))
            log(f"packed {r['files']} ({r['bytes'] / pack.MiB:.1f} MiB"
                + (f", left out {r['skipped_checkpoints']}" if r["skipped_checkpoints"] else "")
                + f") in {time.time() - t:.1f}s")

    def save_variant(net, ratio, kept, record):
        name = export.variant_dir_name(ratio)
        t = time.time()
        ckpt = {"model": args.model, "layers": net.layer_specs, "input_shape": input_shape,
                "keep_ratio": ratio, "kept": {str(k): list(map(int, v)) for k, v in kept.items()},
                "mean": mean, "std": std, "classes": classes,
                "state_dict": nets.state_dict_cpu(net, half=args.half_weights)}
        torch.save(ckpt, out / "weights" / f"{name}.pt")
        training["variants"][name] = record
        if not args.no_export:
            try:
                entry = export.export_variant(net.layer_specs, nets.numpy_weights(net),
                                              input_shape, pkg_dir / name)
                export.set_variant(manifest, ratio, entry)
            except Exception as e:  # keep the weights; re-export later with jmdc_models.export_cli
                log(f"EXPORT FAILED for {name}: {e!r}")
                record["export_error"] = repr(e)
        record["save_export_seconds"] = round(time.time() - t, 2)
        save_all()
        log(f"saved {name} ({record.get('pytorch_top1')}) in {time.time() - t:.1f}s")

    # ---- base ---------------------------------------------------------------------------------
    torch.manual_seed(args.seed)
    base = nets.build(layers, input_shape)
    if args.init_from:
        ck = torch.load(args.init_from, map_location="cpu")
        if ck.get("model") != args.model or ck.get("keep_ratio") != 1.0:
            raise SystemExit(f"--init-from {args.init_from}: not a keep100 checkpoint of {args.model}")
        base.load_state_dict({k: v.float() if v.is_floating_point() else v
                              for k, v in ck["state_dict"].items()})
        training["base_init"] = {"from": Path(args.init_from).name,
                                 "note": "continued from an earlier run's base (see its log)"}
        log(f"base: continuing from {args.init_from}")
    base = base.to(dev)
    if args.channels_last:
        base = base.to(memory_format=torch.channels_last)
    left = deadline.left()
    budget = None if left is None else left * units["base"] / total_units
    log(f"base: {args.epochs} epochs, budget {fmt_s(budget)}")
    rec = train(base, train_d, test_d, epochs=args.epochs, lr=args.lr, batch=args.batch,
                seed=args.seed, schedule=args.schedule, weight_decay=args.weight_decay,
                label_smoothing=args.label_smoothing, amp=amp, budget_s=budget,
                min_epochs=min(args.epochs, args.min_epochs), tag=f"{args.model} base",
                eval_every=10, clip=args.clip or None, cutout=args.cutout,
                stuck_epoch=args.stuck_epoch if args.epochs > args.stuck_epoch else 0)
    acc = evaluate(base, test_d, amp=amp)
    log(f"base top-1 (PyTorch) {acc:.4f}")
    training["timings_s"]["base"] = rec["seconds"]
    training["base_epochs"] = rec["epochs"]
    full_kept = {i: list(range(layers[i]["out"])) for i in S.conv_indices(layers)}
    save_variant(base, 1.0, full_kept, {"keep_ratio": 1.0, "pytorch_top1": round(acc, 4),
                                        "epochs": rec["epochs"], "seconds": rec["seconds"],
                                        "events": rec["events"], "history": rec["history"]})

    if pruned_ratios:
        # ---- SE gates -------------------------------------------------------------------------
        try:
            gated = copy.deepcopy(base)
            nets.attach_gates(gated)
            if args.channels_last:
                gated = gated.to(memory_format=torch.channels_last)
            left = deadline.left()
            budget = None if left is None else left * units["gate"] / (units["gate"] + units["ft"])
            t = time.time()
            grec = train(gated, train_d, None, epochs=args.gate_epochs, lr=args.gate_lr,
                         batch=args.batch, seed=args.seed + 1, schedule="cosine",
                         weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                         amp=amp, budget_s=budget, gate_l1=args.gate_l1, tag=f"{args.model} gates",
                         clip=args.clip or None, gate_lr_mult=args.gate_lr_mult,
                         cutout=args.cutout)
            scores = gate_scores(gated, train_d, amp=amp)
            gacc = evaluate(gated, test_d, amp=amp)
            training["timings_s"]["gates"] = round(time.time() - t, 1)
            training["gates"] = {"epochs": grec["epochs"], "pytorch_top1_with_gates": round(gacc, 4)}
            conv_scores = {}
            for ci in S.conv_indices(layers):
                conv_scores[ci] = scores[S.gate_position(layers, ci)]
            (out / "gate_scores.json").write_text(json.dumps(
                {layers[ci]["name"]: [round(float(v), 5) for v in s]
                 for ci, s in conv_scores.items()}) + "\n")
            log(f"gates: top-1 with gates {gacc:.4f}; score ranges " + ", ".join(
                f"{layers[ci]['name']} {float(s.min()):.3f}..{float(s.max()):.3f}"
                for ci, s in conv_scores.items()))
            del gated
        except Exception as e:  # noqa: BLE001  keep going: score channels by filter L1 norm
            import traceback
            traceback.print_exc()
            log(f"GATE STAGE FAILED ({e!r}); falling back to L1-norm channel scores")
            training["gates"] = {"error": repr(e), "fallback": "conv filter L1 norm"}
            conv_scores = {ci: base.layers[ci].op.weight.detach().abs().sum(dim=(1, 2, 3)).float().cpu()
                           for ci in S.conv_indices(layers)}

        # ---- pruned variants ------------------------------------------------------------------
        teacher = base if args.kd else None
        for n_done, r in enumerate(pruned_ratios):
            try:
                kept = {}
                for ci, s in conv_scores.items():
                    k = S.keep_count(len(s), r)
                    kept[ci] = sorted(int(j) for j in torch.argsort(s, descending=True)[:k])
                net = nets.prune(base, kept)
                if args.channels_last:
                    net = net.to(memory_format=torch.channels_last)
                acc0 = evaluate(net, test_d, amp=amp)
                left = deadline.left()
                rest = [x for x in pruned_ratios[n_done:]]
                share = (0.5 + 0.5 * r) / sum(0.5 + 0.5 * x for x in rest)
                budget = None if left is None else left * share
                epochs = args.ft_epochs
                if budget is not None and budget < 1.0:
                    epochs = 0
                log(f"keep {r}: channels {[len(v) for v in kept.values()]}, top-1 before fine-tune "
                    f"{acc0:.4f}; {epochs} epochs, budget {fmt_s(budget)}")
                frec = {"epochs": 0, "seconds": 0.0, "history": []}
                if epochs:
                    frec = train(net, train_d, test_d, epochs=epochs, lr=args.ft_lr, batch=args.batch,
                                 seed=args.seed + 10 + n_done, schedule=args.schedule,
                                 weight_decay=args.weight_decay,
                                 label_smoothing=args.label_smoothing, amp=amp, budget_s=budget,
                                 teacher=teacher, kd_alpha=args.kd, tag=f"{args.model} keep {r}",
                                 eval_every=10, clip=args.clip or None, cutout=args.cutout)
                acc = evaluate(net, test_d, amp=amp)
                log(f"keep {r}: top-1 (PyTorch) {acc:.4f}")
                training["timings_s"][export.variant_dir_name(r)] = frec["seconds"]
                save_variant(net, r, kept, {
                    "keep_ratio": r, "pytorch_top1": round(acc, 4),
                    "pytorch_top1_before_finetune": round(acc0, 4),
                    "channels": {layers[ci]["name"]: len(v) for ci, v in kept.items()},
                    "epochs": frec["epochs"], "seconds": frec["seconds"],
                    "history": frec["history"]})
                del net
            except Exception as e:  # noqa: BLE001  keep the other variants
                import traceback
                traceback.print_exc()
                log(f"VARIANT keep {r} FAILED: {e!r}")
                training["variants"][export.variant_dir_name(r)] = {"error": repr(e)}
    training["timings_s"]["total"] = round(time.time() - t_start, 1)
    save_all()
    log(f"{args.model}: done in {time.time() - t_start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
