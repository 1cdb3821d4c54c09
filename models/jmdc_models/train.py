"""Training on a dataset held entirely on the device as uint8, augmentation with tensor ops."""

import math
import time

import torch
import torch.nn.functional as F


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class DeviceData:
    """uint8 images ``[N, 3, 32, 32]`` + labels on ``device``; normalisation on the fly."""

    def __init__(self, x, y, mean, std, device, channels_last=False):
        self.x = torch.as_tensor(x).to(device)
        self.y = torch.as_tensor(y).long().to(device)
        self.device = device
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255.0
        self.channels_last = channels_last
        self.padded = None

    def __len__(self):
        return self.x.shape[0]

    def norm(self, xb):
        out = (xb.float() - self.mean) / self.std
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def augmented(self, idx, gen, pad=4, cutout=0):
        """Random crop 32 from the zero-padded image (padding 4) + random horizontal flip, then
        (``cutout`` > 0) one ``cutout`` x ``cutout`` square at a uniformly random centre set to the
        channel mean (zero after normalisation), clipped at the border (DeVries & Taylor 2017)."""
        if self.padded is None:
            self.padded = F.pad(self.x, (pad, pad, pad, pad))
        b = idx.shape[0]
        h, w = self.x.shape[2], self.x.shape[3]
        oy = torch.randint(0, 2 * pad + 1, (b,), device=self.device, generator=gen)
        ox = torch.randint(0, 2 * pad + 1, (b,), device=self.device, generator=gen)
        rows = (oy[:, None] + torch.arange(h, device=self.device)[None, :])  # b,h
        cols = (ox[:, None] + torch.arange(w, device=self.device)[None, :])  # b,w
        flip = torch.rand(b, device=self.device, generator=gen) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        src = self.padded[idx]  # b,c,H,W
        c = src.shape[1]
        bi = torch.arange(b, device=self.device)[:, None, None, None]
        ci = torch.arange(c, device=self.device)[None, :, None, None]
        out = self.norm(src[bi, ci, rows[:, None, :, None], cols[:, None, None, :]])
        if cutout:
            cy = torch.randint(0, h, (b,), device=self.device, generator=gen)
            cx = torch.randint(0, w, (b,), device=self.device, generator=gen)
            ys = torch.arange(h, device=self.device)[None, :]
            xs = torch.arange(w, device=self.device)[None, :]
            y0 = (cy - cutout // 2)[:, None]
            x0 = (cx - cutout // 2)[:, None]
            in_y = (ys >= y0) & (ys < y0 + cutout)  # b,h
            in_x = (xs >= x0) & (xs < x0 + cutout)  # b,w
            hole = in_y[:, None, :, None] & in_x[:, None, None, :]  # b,1,h,w
            out = out.masked_fill(hole, 0.0)
        return out, self.y[idx]


def lr_at(progress, peak, schedule, warmup=0.15, final_div=100.0):
    """progress in [0, 1]. ``onecycle``: linear warm-up then cosine to peak/final_div;
    ``cosine``: cosine from peak to 0 (short linear warm-up of 2 %)."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "onecycle":
        if progress < warmup:
            return peak * (0.1 + 0.9 * progress / warmup)
        p = (progress - warmup) / (1 - warmup)
        lo = peak / final_div
        return lo + (peak - lo) * 0.5 * (1 + math.cos(math.pi * p))
    if progress < 0.02:
        return peak * (0.1 + 0.9 * progress / 0.02)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def evaluate(net, data, batch=1000, amp=False):
    net.eval()
    correct = 0
    with torch.no_grad(), autocast(data.device, amp):
        for i in range(0, len(data), batch):
            logits = net(data.norm(data.x[i:i + batch]))
            correct += int((logits.argmax(1) == data.y[i:i + batch]).sum())
    return correct / len(data)


def autocast(device, amp):
    """bf16 autocast when ``amp`` (cuda; on cpu only for testing the code path)."""
    dev = str(device)
    if amp:
        return torch.autocast("cuda" if dev.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def train(net, train_data, test_data, *, epochs, lr, batch, seed, schedule="onecycle",
          weight_decay=5e-4, momentum=0.9, label_smoothing=0.1, amp=False, budget_s=None,
          min_epochs=1, teacher=None, kd_alpha=0.5, kd_temp=4.0, gate_l1=0.0, tag="train",
          eval_every=0, clip=None, gate_lr_mult=10.0, stuck_epoch=0, stuck_loss=2.15, cutout=0):
    """SGD (Nesterov) with a per-step LR schedule. If ``budget_s`` is given, the number of
    epochs is reduced (never below ``min_epochs``) as soon as the measured epoch time says the
    plan does not fit; the schedule then follows the new total.

    Guards: an epoch with a non-finite loss is rolled back (weights restored, momentum cleared)
    and the LR halved (at most 3 times); if ``stuck_epoch`` is set and the mean training loss of
    that epoch is still above ``stuck_loss`` (chance level is ln 10 = 2.30), training restarts
    once from the initial weights with half the LR. Returns a record dict."""
    gen = torch.Generator(device=train_data.device)
    gen.manual_seed(seed)
    params_decay, params_no, params_gate = [], [], []
    for n, p in net.named_parameters():
        if ".gate." in n:
            params_gate.append(p)
        else:
            (params_no if p.ndim <= 1 else params_decay).append(p)
    groups = [{"params": params_decay, "weight_decay": weight_decay, "lr_mult": 1.0},
              {"params": params_no, "weight_decay": 0.0, "lr_mult": 1.0}]
    if params_gate:  # fresh SE gates learn faster than the pretrained network around them
        groups.append({"params": params_gate, "weight_decay": 0.0, "lr_mult": gate_lr_mult})
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    n = len(train_data)
    steps_per_epoch = n // batch if n >= batch else 1
    total_epochs = epochs
    t0 = time.time()
    step = 0
    done = 0
    history = []
    if teacher is not None:
        teacher.eval()
    lr_scale = 1.0
    rollbacks = 0
    restarted = False
    events = []
    initial = {k: v.detach().clone() for k, v in net.state_dict().items()}
    first_epoch = 0.0
    t_run = t0
    while done < total_epochs:
        net.train()
        te = time.time()
        snapshot = {k: v.detach().clone() for k, v in net.state_dict().items()}
        step_at_start = step
        perm = torch.randperm(n, device=train_data.device, generator=gen)
        loss_sum = torch.zeros((), device=train_data.device)
        for s in range(steps_per_epoch):
            idx = perm[s * batch:(s + 1) * batch]
            xb, yb = train_data.augmented(idx, gen, cutout=cutout)
            progress = step / max(1, total_epochs * steps_per_epoch)
            cur_lr = lr_at(progress, lr, schedule) * lr_scale
            for g in opt.param_groups:
                g["lr"] = cur_lr * g["lr_mult"]
            with autocast(train_data.device, amp):
                logits = net(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=label_smoothing)
                if teacher is not None:
                    with torch.no_grad():
                        tl = teacher(xb).float()
                    kd = F.kl_div(F.log_softmax(logits.float() / kd_temp, 1),
                                  F.softmax(tl / kd_temp, 1), reduction="batchmean")
                    loss = (1 - kd_alpha) * loss + kd_alpha * kd_temp * kd_temp * kd
                if gate_l1:
                    gl = [m.gate.last for m in net.layers if m.gate is not None]
                    if gl:
                        loss = loss + gate_l1 * sum(g.mean() for g in gl) / len(gl)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            opt.step()
            loss_sum += loss.detach()
            step += 1
        loss_avg = float(loss_sum) / steps_per_epoch
        ep_time = time.time() - te
        if not math.isfinite(loss_avg):
            rollbacks += 1
            if rollbacks > 3:
                raise FloatingPointError(f"{tag}: loss is {loss_avg} after 3 rollbacks")
            net.load_state_dict(snapshot)
            opt.state.clear()
            lr_scale *= 0.5
            step = step_at_start
            events.append(f"epoch {done + 1}: non-finite loss, rolled back, LR x{lr_scale}")
            log(f"{tag}: {events[-1]}")
            continue
        done += 1
        if stuck_epoch and done == stuck_epoch and not restarted and loss_avg > stuck_loss:
            restarted = True
            net.load_state_dict(initial)
            opt.state.clear()
            lr_scale *= 0.5
            events.append(f"epoch {done}: loss {loss_avg:.3f} > {stuck_loss} (stuck near chance), "
                          f"restarted from the initial weights with LR x{lr_scale}")
            log(f"{tag}: {events[-1]}")
            done, step, history = 0, 0, []
            t_run = time.time()
            continue
        elapsed = time.time() - t0
        rec = {"epoch": done, "loss": round(loss_avg, 4), "seconds": round(ep_time, 2)}
        if eval_every and (done % eval_every == 0 or done == total_epochs) and test_data is not None:
            rec["test_top1"] = round(evaluate(net, test_data, amp=amp), 4)
        history.append(rec)
        log(f"{tag}: epoch {done}/{total_epochs} loss {loss_avg:.4f} lr {cur_lr:.4f} "
            f"{ep_time:.1f}s" + (f" test {rec['test_top1']:.4f}" if "test_top1" in rec else ""))
        if done == 1:
            first_epoch = ep_time
        if budget_s is not None and done < epochs:
            # first epoch includes warm-up (cudnn autotuning); later estimates exclude it
            run_elapsed = time.time() - t_run
            per_epoch = ep_time if done == 1 else (run_elapsed - first_epoch) / (done - 1)
            fit = done + int(max(0.0, budget_s - elapsed) / max(per_epoch, 1e-6))
            new_total = min(epochs, max(min_epochs, fit, done))
            if new_total != total_epochs:
                log(f"{tag}: time budget {budget_s:.0f}s -> {new_total} epochs instead of "
                    f"{total_epochs} ({per_epoch:.2f}s/epoch)")
                total_epochs = new_total
    return {"epochs_planned": epochs, "epochs": done, "seconds": round(time.time() - t0, 1),
            "history": history, "events": events, "lr_scale": lr_scale}


def gate_scores(net, data, batch=1000, amp=False):
    """Mean SE gate value per channel over ``data`` (no augmentation), per gated layer index."""
    net.eval()
    sums = {}
    with torch.no_grad(), autocast(data.device, amp):
        for i in range(0, len(data), batch):
            net(data.norm(data.x[i:i + batch]))
            for li, layer in enumerate(net.layers):
                if layer.gate is not None:
                    g = layer.gate.last.float().sum(0)
                    sums[li] = sums.get(li, 0) + g
    return {li: (s / len(data)).cpu() for li, s in sums.items()}
