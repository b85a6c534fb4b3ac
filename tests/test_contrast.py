"""das.contrast: pooling and InfoNCE with index-aligned positives."""
import itertools
import pytest
import torch
import torch.nn.functional as F
from das.core import DasError
from das.contrast import contrastive_loss, gather_rows, pool


def views(B=4, d=16, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, generator=g)
    return x, x + noise * torch.randn(B, d, generator=g), torch.randn(B, d, generator=g)


def test_positive_is_own_second_view():
    # only the identity pairing of anchors with positives attains the minimum
    a, p, n = views()
    losses = {perm: float(contrastive_loss(a, p[list(perm)], n)) for perm in itertools.permutations(range(4))}
    ranked = sorted(losses, key=losses.get)
    assert ranked[0] == (0, 1, 2, 3)
    assert losses[ranked[1]] > losses[ranked[0]] + 1.0


def test_reference_pairing_is_wrong():
    # the reference's repeat(2, 1) + view(-1, 2) pairs different samples; halves pair a sample with itself
    a, p, n = views()
    out = torch.cat([a, p])                          # model output on the batch repeated: x then its second views
    ref_a, ref_p = out.view(-1, 2, a.shape[1])[:, 0], out.view(-1, 2, a.shape[1])[:, 1]
    assert contrastive_loss(ref_a, ref_p, n) > contrastive_loss(out[:4], out[4:], n) + 1.0


@pytest.mark.parametrize('seed', range(10))
def test_aligned_lower_than_shuffled(seed):
    a, p, n = views(B=8, noise=0.3, seed=seed)
    perm = torch.roll(torch.arange(8), 1)
    assert contrastive_loss(a, p, n) < contrastive_loss(a, p[perm], n)
    assert contrastive_loss(a, p) < contrastive_loss(a, p[perm])


def test_no_negative_is_in_batch_infonce():
    a, p, _ = views()
    manual = F.cross_entropy(F.normalize(a, dim=-1) @ F.normalize(p, dim=-1).T / 0.05, torch.arange(4))
    torch.testing.assert_close(contrastive_loss(a, p), manual)
    # negatives only enlarge the denominator
    assert contrastive_loss(a, p, views(seed=1)[2]) >= contrastive_loss(a, p)


def test_gradient_flows():
    a, p, n = (t.clone().requires_grad_() for t in views())
    contrastive_loss(a, p, n).backward()
    for t in (a, p, n): assert t.grad is not None and t.grad.abs().sum() > 0


def test_temperature_and_weight_are_parameters():
    a, p, n = views()
    torch.testing.assert_close(contrastive_loss(a, p, n, weight=2.5), 2.5 * contrastive_loss(a, p, n))
    torch.testing.assert_close(contrastive_loss(a, p, n, tau=1e6), torch.log(torch.tensor(8.)), atol=1e-4, rtol=0)
    assert contrastive_loss(a, p, n, tau=0.05) < contrastive_loss(a, p, n, tau=0.5)
    with pytest.raises(DasError, match='tau=0 must be > 0'): contrastive_loss(a, p, n, tau=0)


def test_pool_ignores_padding_and_bad_input():
    h = torch.tensor([[[1., 1.], [3., 3.], [5., 5.]], [[2., 0.], [4., 0.], [100., 100.]]])
    am = torch.tensor([[1, 1, 1], [1, 1, 0]])
    torch.testing.assert_close(pool(h, am), torch.tensor([[3., 3.], [3., 0.]]))
    with pytest.raises(DasError, match='attention_mask has shape'): pool(h, am[:, :2])
    with pytest.raises(DasError, match='must both be'): contrastive_loss(h[0], h[1][:1])


def test_gather_rows_single_process_is_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_rows(x) is x
