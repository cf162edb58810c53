"""White-box model inversion: optimise an image that the target model assigns to a private identity.

Threat model: :data:`~privacy.attacks.target.WHITE_BOX` (weights and the input transform; gradients flow from
the scores back through the head, backbone, channel mask and block DCT to the image).

* :func:`invert` with ``prior=None``: Fredrikson et al. (2015) style, the pixels themselves are optimised (through
  a sigmoid, so they stay in ``[0, 1]``), with total-variation and norm penalties. On CNN targets this finds
  patterns the target is sure of rather than faces; it is the reference point.
* :func:`invert` with a prior (:mod:`privacy.attacks.priors`): the latent of a decoder learned from public
  faces is optimised instead (GMI, Zhang et al. 2020), with a penalty that keeps it where the prior puts faces.

Both make the objective robust, as the strongest attacks do (PPA, Struppek et al. 2022): the score is averaged
over random views of the image (:func:`~privacy.attacks.augment.random_augment`), each identity is attacked
from several starts, and the start whose final image the target is most sure of under fresh random views is
kept. With a prior and ``public_images``, the starts are PPA's initial selection: the latents of the public faces
the target already scores highest for the identity (the attacker's own faces, encoded by the prior), instead of
random latents.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from privacy.attacks.augment import random_augment
from privacy.attacks.priors import ImagePrior
from privacy.attacks.target import TargetModel

__all__ = ["WHITEBOX_LOSSES", "InversionResult", "invert", "total_variation"]

#: the identity objectives :func:`invert` accepts
WHITEBOX_LOSSES = ("margin", "ce")


@dataclass
class InversionResult:
    """What an inversion produced.

    :ivar images: ``(n, C, H, W)`` one reconstruction per attacked identity, in ``[0, 1]``.
    :ivar classes: ``(n,)`` the identities attacked.
    :ivar target_confidence: ``(n,)`` the target's softmax probability of the identity on the kept image.
    :ivar seconds: wall time.
    :ivar info: settings and diagnostics.
    """

    images: torch.Tensor
    classes: torch.Tensor
    target_confidence: torch.Tensor
    seconds: float
    info: dict[str, object] = field(default_factory=dict)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per image ``(n,)``."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3)) + (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))


def _identity_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "ce":
        return F.cross_entropy(logits, target, reduction="none")
    # "margin" (checked by _check_inversion): PLG-MI's max-margin loss, the target's logit above the best other one
    own = logits.gather(1, target.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, target.view(-1, 1), float("-inf")).max(1).values
    return other - own


def _check_inversion(target: TargetModel, classes: torch.Tensor | list[int], prior: ImagePrior | None,
                     restarts: int, steps: int, views: int, loss: str) -> torch.Tensor:
    """The identities to attack as a CPU tensor; a clear error for settings :func:`invert` cannot run."""
    cls = torch.as_tensor(classes, dtype=torch.long).reshape(-1).cpu()
    if len(cls) == 0:
        raise ValueError("no identities to attack")
    if int(cls.min()) < 0 or int(cls.max()) >= target.num_classes:
        raise ValueError(f"classes must be identities of the target, 0..{target.num_classes - 1}, got "
                         f"{int(cls.min())}..{int(cls.max())}")
    if loss not in WHITEBOX_LOSSES:
        raise ValueError(f"unknown identity loss {loss!r}: accepted {' or '.join(repr(k) for k in WHITEBOX_LOSSES)}")
    if restarts < 1 or steps < 1 or views < 1:
        raise ValueError(f"restarts, steps and views must be >= 1, got {restarts}, {steps}, {views}")
    if prior is not None and tuple(prior.image_size) != target.image_size:
        raise ValueError(f"the prior makes {prior.image_size} images, the target reads {target.image_size}")
    return cls


@torch.no_grad()
def _keep_best(target: TargetModel, images: torch.Tensor, confidence: torch.Tensor, cls: torch.Tensor,
               restarts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per identity, the start whose image the target was most sure of under random views, and the target's
    confidence in it (one clean view)."""
    best = confidence.view(len(cls), restarts).argmax(1) + torch.arange(len(cls)) * restarts
    kept = images[best]
    dev = next(target.parameters()).device
    return kept, torch.softmax(target(kept.to(dev)), 1).gather(1, cls.to(dev).view(-1, 1)).squeeze(1).cpu()


def invert(
    target: TargetModel,
    classes: torch.Tensor | list[int],
    prior: ImagePrior | None = None,
    restarts: int = 4,
    steps: int = 200,
    lr: float | None = None,
    views: int = 4,
    loss: str = "margin",
    latent_weight: float = 0.05,
    tv_weight: float = 0.05,
    l2_weight: float = 0.01,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    public_images: torch.Tensor | None = None,
) -> InversionResult:
    """Invert the target for each identity in ``classes``.

    :param target: the white-box target model.
    :param classes: identities to attack (labels of the target).
    :param prior: a latent image prior (``None``: optimise the pixels).
    :param restarts: random starts per identity; the best is kept.
    :param steps: Adam steps per start.
    :param lr: Adam step size (default 0.05 for a latent, 0.1 for pixel logits).
    :param views: random views per image and step the objective is averaged over (``1`` with no augmentation).
    :param loss: ``"margin"`` (the identity's logit against the best other one, PLG-MI's max-margin loss) or
        ``"ce"`` (its cross-entropy, which saturates once the target is sure; see
        :class:`privacy.evaluate.AttackBudget`'s ``whitebox_loss`` for what each reaches).
    :param latent_weight: weight of ``mean(z**2)`` (keeps a prior's latent where faces are).
    :param tv_weight: weight of the total variation (no prior only).
    :param l2_weight: weight of the mean squared distance to mid-grey (no prior only).
    :param batch_size: images optimised together (identities x restarts are cut into such batches).
    :param seed: seed of the starts and the views.
    :param progress: show a progress bar over batches.
    :param public_images: ``(P, C, H, W)`` the attacker's public faces; with a prior, each identity's starts are
        the encodings of the ``restarts`` public faces the target scores highest for it (``None``: random starts).
    """
    t0 = time.perf_counter()
    cls = _check_inversion(target, classes, prior, restarts, steps, views, loss)
    dev = next(target.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    c, (h, w) = target.in_channels, target.image_size
    step_size = lr if lr is not None else (0.05 if prior is not None else 0.1)

    def render(param: torch.Tensor) -> torch.Tensor:
        return prior.decode(param) if prior is not None else torch.sigmoid(param)

    todo = cls.repeat_interleave(restarts)  # identity of each start
    starts = None
    if prior is not None and public_images is not None:
        starts = _public_starts(target, prior, public_images, cls, restarts, batch_size)
    images, conf = [], []
    n_batches = (len(todo) + batch_size - 1) // batch_size
    for b in tqdm(range(n_batches), desc=f"white-box ({'prior' if prior is not None else 'no prior'})",
                  disable=not progress):
        y = todo[b * batch_size : (b + 1) * batch_size].to(dev)
        param = (starts[b * batch_size : (b + 1) * batch_size].clone() if starts is not None else
                 torch.randn(len(y), prior.latent_dim, generator=gen) if prior is not None else
                 0.1 * torch.randn(len(y), c, h, w, generator=gen)).to(dev)  # a public face's code, or random
        param.requires_grad_(True)
        opt = torch.optim.Adam([param], lr=step_size)
        for _ in range(steps):
            x = render(param)
            xs = random_augment(x.repeat(views, 1, 1, 1), gen if dev.type == "cpu" else None) if views > 1 else x
            obj = _identity_loss(target(xs), y.repeat(views), loss).view(views, -1).mean(0)
            obj = obj + (latent_weight * param.pow(2).mean(1) if prior is not None else
                         tv_weight * total_variation(x) + l2_weight * (x - 0.5).pow(2).mean(dim=(1, 2, 3)))
            opt.zero_grad(set_to_none=True)
            obj.sum().backward()
            opt.step()
        with torch.no_grad():
            x = render(param)
            check = random_augment(x.repeat(8, 1, 1, 1), gen if dev.type == "cpu" else None)
            p = torch.softmax(target(check), 1).gather(1, y.repeat(8).view(-1, 1)).view(8, -1).mean(0)
        images.append(x.detach().cpu())
        conf.append(p.cpu())
    kept, final_conf = _keep_best(target, torch.cat(images), torch.cat(conf), cls, restarts)
    return InversionResult(kept, cls, final_conf, time.perf_counter() - t0, {
        "prior": type(prior).__name__ if prior is not None else None, "restarts": restarts, "steps": steps,
        "views": views, "loss": loss, "lr": step_size, "starts": "public faces" if starts is not None else "random",
    })


@torch.no_grad()
def _public_starts(target: TargetModel, prior: ImagePrior, public: torch.Tensor, classes: torch.Tensor,
                   restarts: int, batch_size: int) -> torch.Tensor:
    """``(len(classes) * restarts, latent_dim)``: per identity, the prior's latents of the ``restarts`` public faces
    with the highest target score for it (mirror images included, so 2P candidates)."""
    dev = next(target.parameters()).device
    cand = torch.cat([public, public.flip(-1)])
    if len(cand) < restarts:
        raise ValueError(f"{len(public)} public faces give {len(cand)} starts, fewer than restarts={restarts}")
    logp = torch.cat([torch.log_softmax(target(cand[i : i + batch_size].to(dev)), 1).cpu()
                      for i in range(0, len(cand), batch_size)])
    pick = logp[:, classes].topk(restarts, dim=0).indices.T.reshape(-1)  # (classes * restarts,)
    latents = torch.cat([prior.encode(cand[i : i + batch_size].to(dev)).cpu() for i in range(0, len(cand), batch_size)])
    return latents[pick]
