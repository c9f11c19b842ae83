"""Randomized smoothing (Cohen et al. 2019): CERTIFY and PREDICT for g(x) = argmax_c P(f(x + delta) = c),
delta ~ N(0, sigma^2 I) in pixel space.

CERTIFY: the top class of N0 selection draws is the candidate c_A; N fresh estimation draws count how often
f picks it; the one-sided Clopper-Pearson lower bound of p_A at level alpha gives the certified l2 radius
sigma x Phi^-1(p_A lower), or an abstention when that bound is at most 1/2. PREDICT: from the same N
estimation counts, the top class if a two-sided binomial test of the top two counts rejects equality at
alpha, else abstain.

Noise draws are batched: many draws of one example and many examples per forward pass, up to `max_batch`
noisy inputs at a time; they use the caller's random state (the evaluation seeds each batch). scipy.stats is
imported where it is used: it costs about a second, and `benchmark list` imports this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.pgd import eval_mode

ABSTAIN = -1


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion."""
    from scipy.stats import beta

    return 0.0 if successes == 0 else float(beta.ppf(alpha, successes, trials - successes + 1))


@torch.no_grad()
def class_counts(model: nn.Module, x: Tensor, draws: int, sigma: float, num_classes: int,
                 max_batch: int) -> Tensor:
    """counts[i, c]: how many of `draws` noisy copies of x[i] the model classifies as c."""
    counts = torch.zeros(len(x), num_classes, dtype=torch.long, device=x.device)
    per_forward = max(1, max_batch // max(draws, 1))  # examples whose draws fit in one forward pass
    with eval_mode(model):
        for start in range(0, len(x), per_forward):
            chunk = x[start:start + per_forward]
            done = 0
            while done < draws:
                take = min(draws - done, max(1, max_batch // len(chunk)))
                noise = torch.randn(len(chunk), take, *chunk.shape[1:], device=x.device, dtype=x.dtype)
                noisy = noise.mul_(sigma).add_(chunk[:, None])  # in place: one buffer of take copies
                predictions = model(noisy.flatten(0, 1)).argmax(dim=1).view(len(chunk), take)
                counts[start:start + len(chunk)] += F.one_hot(predictions, num_classes).sum(dim=1)
                done += take
    return counts


def certify(model: nn.Module, x: Tensor, *, n0: int, n: int, alpha: float, sigma: float, num_classes: int,
            max_batch: int) -> dict[str, Tensor]:
    """Per example: the certified class (ABSTAIN where p_A's lower bound is at most 1/2), its l2 radius (0 on
    abstention), the count of c_A among the N estimation draws, and PREDICT's class from those draws."""
    from scipy.stats import norm

    candidate = class_counts(model, x, n0, sigma, num_classes, max_batch).argmax(dim=1)
    counts = class_counts(model, x, n, sigma, num_classes, max_batch).cpu()
    count_a = counts.gather(1, candidate.cpu()[:, None])[:, 0]
    lower = torch.tensor([lower_confidence_bound(int(k), n, alpha) for k in count_a], dtype=torch.float64)
    certified = lower > 0.5
    radius = torch.where(certified, sigma * torch.from_numpy(norm.ppf(lower.numpy())), torch.zeros_like(lower))
    return {"certified_class": torch.where(certified, candidate.cpu(), ABSTAIN), "radius": radius.float(),
            "count": count_a, "predicted_class": predict_from_counts(counts, alpha)}


def predict_from_counts(counts: Tensor, alpha: float) -> Tensor:
    """Cohen et al.'s PREDICT on given counts: the top class, or ABSTAIN unless the top two differ at alpha."""
    from scipy.stats import binomtest

    top = counts.topk(2, dim=1)
    out = []
    for (first, second), cls in zip(top.values.tolist(), top.indices[:, 0].tolist(), strict=True):
        significant = binomtest(first, first + second, 0.5).pvalue <= alpha if first + second else False
        out.append(cls if significant else ABSTAIN)
    return torch.tensor(out)
