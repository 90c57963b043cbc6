"""Naive reference steps that mirror the official code's *structure*, for side-by-side timing in bench/run_all.py.

They follow the loops of VICO-UoE/DatasetCondensation (main_DM.py, main.py with DSA), uitrbn/IDM (IDM_cifar10.py)
and IID's covariance term, written the way those scripts are written:

* the real split kept as one float tensor plus Python lists of per-class indices; ``get_images(c, n)`` =
  ``torch.randperm`` of the class's indices, one gather per class;
* a Python loop over classes with one forward pass per class (and DSA called per class with a shared seed);
* DM: a fresh network from ``get_network`` every iteration, real embeddings computed with autograd on and then
  ``.detach()``-ed (as ``embed(img_real).detach()``);
* IDM: the class-sequential update (``zero_grad``/``backward``/``step`` inside the class loop), partition
  ("number_sign_augment") of each class's synthetic images, CE on the synthetic logits, a queue of networks of
  which ``fetch`` nets are trained ``model_train_steps`` SGD steps on uniform real batches after every iteration;
* DSA/DC: per-class gradient matching (``torch.autograd.grad`` per class), then the network trained
  ``inner_loop`` steps on the synthetic set.

They are timing references, not numerical replicas: random draws differ from ddcore's streams. Augmentation uses
ddcore's DSA functions (the official DiffAugment has the same per-call structure), so the comparison isolates the
engine's batching, not a different augmentation implementation.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ddcore.augment import dsa
from ddcore.models.convnet import ConvNet

STRATEGY = "color_crop_cutout_flip_scale_rotate"


class OfficialData:
    """``images_all`` (float, normalised, on device) + ``indices_class`` lists, as the official scripts build them."""

    def __init__(self, train, device: torch.device):
        self.images_all = train.normalize(train.images).to(device)
        labels = train.labels.cpu().tolist()
        self.num_classes = train.num_classes
        self.indices_class = [[] for _ in range(self.num_classes)]
        for i, lab in enumerate(labels):
            self.indices_class[lab].append(i)
        self.labels_all = train.labels.to(device)

    def get_images(self, c: int, n: int) -> torch.Tensor:
        idx_shuffle = torch.randperm(len(self.indices_class[c]))[:n].tolist()
        return self.images_all[[self.indices_class[c][i] for i in idx_shuffle]]


def get_network(info, width: int, depth: int, device: torch.device) -> ConvNet:
    net = ConvNet(channels=info.channels, height=info.height, width=info.width, num_classes=info.num_classes,
                  net_width=width, net_depth=depth)
    return net.to(device)


def diff_augment(x: torch.Tensor, seed: int, device: torch.device) -> torch.Tensor:
    """One DiffAugment call with a seed: one family and one parameter set for the whole call (siamese per class)."""
    g = torch.Generator().manual_seed(seed)
    params = dsa.sample_params(STRATEGY, 1, g, device, dsa.DSAConfig())
    return dsa.apply(x, params, torch.zeros(x.shape[0], dtype=torch.int64, device=x.device))


def partition(img_syn: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """IDM's number_sign_augment: every image cut into factor x factor tiles, each upsampled to full size."""
    n, c, h, w = img_syn.shape
    th, tw = h // factor, w // factor
    tiles = [img_syn[:, :, i * th:(i + 1) * th, j * tw:(j + 1) * tw] for i in range(factor) for j in range(factor)]
    return F.interpolate(torch.cat(tiles), size=(h, w), mode="bilinear", align_corners=False)


def local_covariance(fmap: torch.Tensor) -> torch.Tensor:
    """IID-style local covariance of a feature map ``[B, C, h, w]`` -> ``[C, C]`` (per class, in the loop)."""
    d = fmap.flatten(2)
    d = d - d.mean(dim=2, keepdim=True)
    return torch.einsum("bcp,bdp->cd", d, d) / d.shape[0]


class NaiveDM:
    """main_DM.py: fresh net per iteration, per-class loop, DSA per class, one SGD step on all images."""

    def __init__(self, data: OfficialData, info, image_syn: torch.Tensor, ipc: int, batch_real: int, device,
                 width: int = 128, depth: int = 3):
        self.data, self.info, self.ipc, self.batch_real, self.device = data, info, ipc, batch_real, device
        self.width, self.depth = width, depth
        self.image_syn = image_syn.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.SGD([self.image_syn], lr=1.0, momentum=0.5)

    def step(self, it: int) -> torch.Tensor:
        net = get_network(self.info, self.width, self.depth, self.device)
        net.train()
        for p in net.parameters():
            p.requires_grad = False
        embed = net.embed
        loss = torch.tensor(0.0, device=self.device)
        for c in range(self.info.num_classes):
            img_real = self.data.get_images(c, self.batch_real)
            img_syn = self.image_syn[c * self.ipc:(c + 1) * self.ipc]
            seed = 1000 * it + c
            img_real = diff_augment(img_real, seed, self.device)
            img_syn = diff_augment(img_syn, seed, self.device)
            output_real = embed(img_real).detach()
            output_syn = embed(img_syn)
            loss = loss + torch.sum((output_real.mean(0) - output_syn.mean(0)) ** 2)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class NaiveIDM:
    """IDM_cifar10.py: queue of nets, per-class loop with partition + DSA, DM + CE (+ IID covariance) terms,
    class-sequential SGD (a step per class), then ``fetch`` queue nets trained on uniform real batches."""

    def __init__(self, data: OfficialData, info, image_syn: torch.Tensor, ipc: int, batch_real: int, device,
                 width: int = 128, depth: int = 3, ce_weight: float = 0.5, cov_weight: float = 0.0,
                 queue: int = 3, fetch: int = 2, train_steps: int = 10, trained_bs: int = 256):
        self.data, self.info, self.ipc, self.batch_real, self.device = data, info, ipc, batch_real, device
        self.ce_weight, self.cov_weight = ce_weight, cov_weight
        self.fetch, self.train_steps, self.trained_bs = fetch, train_steps, trained_bs
        self.image_syn = image_syn.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.SGD([self.image_syn], lr=0.2, momentum=0.5)
        self.nets = [get_network(info, width, depth, device) for _ in range(queue)]
        self.net_optims = [torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                           for n in self.nets]
        self.acc = [50.0] * queue

    def step(self, it: int) -> torch.Tensor:
        k = it % len(self.nets)
        net = self.nets[k]
        net.eval()
        for p in net.parameters():
            p.requires_grad = False
        total = 0.0
        for c in range(self.info.num_classes):
            img_real = self.data.get_images(c, self.batch_real)
            img_syn = partition(self.image_syn[c * self.ipc:(c + 1) * self.ipc])
            lab_syn = torch.full((img_syn.shape[0],), c, dtype=torch.long, device=self.device)
            seed = 1000 * it + c
            img_real = diff_augment(img_real, seed, self.device)
            img_syn = diff_augment(img_syn, seed, self.device)
            out_real = net.forward_all(img_real)
            out_syn = net.forward_all(img_syn)
            loss = torch.sum((out_real.embedding.detach().mean(0) - out_syn.embedding.mean(0)) ** 2)
            loss = loss + self.ce_weight * self.acc[k] * F.cross_entropy(out_syn.logits, lab_syn)
            if self.cov_weight:
                cov_r = local_covariance(out_real.feature_map.detach())
                loss = loss + self.cov_weight * ((cov_r - local_covariance(out_syn.feature_map)) ** 2).sum()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total = total + loss.detach()
        for j in range(self.fetch):  # train queue nets on real data
            m = (it + j) % len(self.nets)
            n, opt = self.nets[m], self.net_optims[m]
            n.train()
            for p in n.parameters():
                p.requires_grad = True
            for _ in range(self.train_steps):
                idx = torch.randperm(self.data.images_all.shape[0])[:self.trained_bs].to(self.device)
                out = n(self.data.images_all[idx])
                l = F.cross_entropy(out, self.data.labels_all[idx])
                opt.zero_grad()
                l.backward()
                opt.step()
        return total


def match_loss(gw_syn, gw_real) -> torch.Tensor:
    """DC's 'ours' distance: per output unit 1 - cosine, summed over layers (biases skipped as in the code)."""
    dis = 0.0
    for gs, gr in zip(gw_syn, gw_real):
        if gs.dim() == 1:
            continue
        gs, gr = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
        dis = dis + torch.sum(1 - torch.sum(gr * gs, dim=-1) /
                              (torch.norm(gr, dim=-1) * torch.norm(gs, dim=-1) + 1e-6))
    return dis


class NaiveDSA:
    """main.py (DC/DSA): per-class gradient matching with DSA; ``collective`` sums the class losses first (DCC).

    One call = one synthetic update followed by ``inner_loop`` network steps on the synthetic set.
    """

    def __init__(self, data: OfficialData, info, image_syn: torch.Tensor, ipc: int, batch_real: int, device,
                 width: int = 128, depth: int = 3, inner_loop: int = 50, collective: bool = False,
                 augment: bool = True):
        self.data, self.info, self.ipc, self.batch_real, self.device = data, info, ipc, batch_real, device
        self.inner_loop, self.collective, self.augment = inner_loop, collective, augment
        self.image_syn = image_syn.detach().clone().requires_grad_(True)
        self.label_syn = torch.arange(info.num_classes, device=device).repeat_interleave(ipc)
        self.optimizer = torch.optim.SGD([self.image_syn], lr=0.1, momentum=0.5)
        self.net = get_network(info, width, depth, device)
        self.net_optim = torch.optim.SGD(self.net.parameters(), lr=0.01)

    def step(self, it: int) -> torch.Tensor:
        net = self.net
        params = list(net.parameters())
        loss = torch.tensor(0.0, device=self.device)
        aug: Callable = (lambda x, s: diff_augment(x, s, self.device)) if self.augment else (lambda x, s: x)
        if self.collective:
            lr = ls = 0.0
        for c in range(self.info.num_classes):
            img_real = self.data.get_images(c, self.batch_real)
            lab_real = torch.full((img_real.shape[0],), c, dtype=torch.long, device=self.device)
            img_syn = self.image_syn[c * self.ipc:(c + 1) * self.ipc]
            lab_syn = self.label_syn[c * self.ipc:(c + 1) * self.ipc]
            seed = 1000 * it + c
            l_real = F.cross_entropy(net(aug(img_real, seed)), lab_real)
            l_syn = F.cross_entropy(net(aug(img_syn, seed)), lab_syn)
            if self.collective:
                lr, ls = lr + l_real, ls + l_syn
                continue
            gw_real = [g.detach() for g in torch.autograd.grad(l_real, params)]
            gw_syn = torch.autograd.grad(l_syn, params, create_graph=True)
            loss = loss + match_loss(gw_syn, gw_real)
        if self.collective:
            gw_real = [g.detach() for g in torch.autograd.grad(lr, params)]
            gw_syn = torch.autograd.grad(ls, params, create_graph=True)
            loss = match_loss(gw_syn, gw_real)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        syn = self.image_syn.detach()
        for s in range(self.inner_loop):  # train the network on the synthetic set (batch 256 = all of it)
            l = F.cross_entropy(net(aug(syn, 10 ** 6 + s)), self.label_syn)
            self.net_optim.zero_grad()
            l.backward()
            self.net_optim.step()
        return loss.detach()


class NaiveKRR:
    """KRR-ST outer step written like db-Lee/selfsup_dd ``algorithms/distill.py`` + ``model_pool.py`` (facts §6).

    Per step: a random pool index (Python ``random``), the model put in eval mode; a real batch drawn the way a
    shuffled ``DataLoader`` delivers it (CPU float tensor → device); kornia ``RandomCrop(pad 4)`` + h-flip as
    ``aug_tr``; teacher features with no grad; bias-augmented features; ``K_ss``, ``K_rs``, ridge 1e-6·tr(K_ss),
    ``torch.linalg.solve``; ``F.mse_loss``; AdamW over ``[x_syn, y_syn]``; then ``model_pool.update``: one full-batch
    MSE SGD step on the updated set (re-created after ``T`` steps). Built from a ddcore run so both sides use the same
    teacher, backbone widths, m, d_y and real batch size.
    """

    def __init__(self, run, device: torch.device, seed: int = 0):
        import random

        import kornia.augmentation as K

        from ddcore_krr.networks import ConvNetKRR

        self.random = random.Random(seed)
        recipe, build = run.recipe, run.build_ctx
        param = run.parameterization
        info = build.info
        self.device = device
        self.teacher = param.teacher.net
        self.x_syn = param.images.detach().clone().requires_grad_(True)
        self.y_syn = param.targets.detach().clone().requires_grad_(True)
        self.opt = torch.optim.AdamW([self.x_syn, self.y_syn], lr=recipe.optimizer.options.get("lr", 1e-3),
                                     weight_decay=0.0)
        self.images_cpu = build.train.normalize(build.train.images).cpu()  # the loader's source (host memory)
        self.batch = recipe.real.batch
        self.aug = torch.nn.Sequential(K.RandomCrop((info.height, info.width), padding=4),
                                       K.RandomHorizontalFlip()).to(device)
        channels = tuple(recipe.backbone.options.get("channels", (128, 256, 512)))
        dim = int(self.y_syn.shape[1])
        sampler = recipe.sampler.options
        self.max_steps = int(sampler.get("max_steps", 1000))
        self.lr, self.wd = float(sampler.get("lr", 0.1)), float(sampler.get("weight_decay", 1e-3))

        def make():
            net = ConvNetKRR(in_channels=info.channels, height=info.height, width=info.width, num_classes=dim,
                             channels=channels).to(device)
            return net, torch.optim.SGD(net.parameters(), lr=self.lr, momentum=0.9, weight_decay=self.wd)

        self.make = make
        self.pool, self.steps = [], []
        for _ in range(int(sampler.get("num_models", 10))):
            net, opt = make()
            t = self.random.randint(1, min(int(sampler.get("init_steps_max", 0)) or self.max_steps, self.max_steps))
            for _ in range(t):
                self._online_step(net, opt)
            self.pool.append((net, opt))
            self.steps.append(t)

    def _online_step(self, net, opt) -> None:
        net.train()
        loss = F.mse_loss(net(self.x_syn.detach()), self.y_syn.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()

    def step(self, it: int) -> None:
        idx = self.random.randrange(len(self.pool))
        net, opt = self.pool[idx]
        net.eval()
        rows = torch.randint(0, self.images_cpu.shape[0], (self.batch,))
        x_real = self.aug(self.images_cpu[rows].to(self.device))
        with torch.no_grad():
            y_real = self.teacher(x_real)
        f_s = net.embed(self.x_syn).flatten(1)
        f_s = torch.cat([f_s, torch.ones_like(f_s[:, :1])], 1)
        with torch.no_grad():
            f_r = net.embed(x_real).flatten(1)
            f_r = torch.cat([f_r, torch.ones_like(f_r[:, :1])], 1)
        k_ss = f_s @ f_s.T
        k_rs = f_r @ f_s.T
        ridge = 1e-6 * torch.trace(k_ss).detach()
        eye = torch.eye(k_ss.shape[0], device=self.device)
        pred = k_rs @ torch.linalg.solve(k_ss + ridge * eye, self.y_syn)
        loss = F.mse_loss(pred, y_real)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        if self.steps[idx] < self.max_steps:  # model_pool.update
            self._online_step(net, opt)
            self.steps[idx] += 1
        else:
            self.pool[idx] = self.make()
            self.steps[idx] = 0
