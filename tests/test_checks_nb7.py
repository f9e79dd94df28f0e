"""Notebook 7's checks, function by function: correct answers written other ways pass, visible
and hidden (``strict``) alike; the wrong answers fail with the message that names their cause,
and a wrong answer the checks cannot pin down gets no guessed cause.

The catalogue (autograder/catalogues/mistakes/07_likelihood.toml) runs the same mistakes through
the notebook's own cells (tests/test_checks.py); these tests pin the properties themselves.
"""
import math

import pytest
import torch
from torch.nn import functional as F

import glowcourse
from glowcourse import checks
from glowcourse.checks.likelihood import _Dequantizer, _Density, _logit_reference
from test_checks_nb6 import _fails  # a check fails, naming the cause (or none)

# -- the reference answers (as in the solution notebook) and correct variants ---------------


def logit_transform(y, alpha=0.05):
    s = alpha + (1 - 2 * alpha) * y
    x = torch.log(s) - torch.log1p(-s)
    logdet = (math.log(1 - 2 * alpha) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
    return x, logdet


def logit_by_logsigmoid(y, alpha=0.05):
    x = torch.logit(alpha + (1 - 2 * alpha) * y)
    return x, (math.log(1 - 2 * alpha) - F.logsigmoid(x) - F.logsigmoid(-x)).reshape(len(y), -1).sum(-1)


def pixel_space_bpd(log_prob_logit, logdet, n_dims, n_bins):
    return glowcourse.bits_per_dim(log_prob_logit + logdet, n_dims, n_bins)


def pixel_bpd_by_hand(log_prob_logit, logdet, n_dims, n_bins):
    return -(log_prob_logit + logdet) / (n_dims * math.log(2)) + math.log2(n_bins)


def variational_bpd(log_prob, dequantizer, images, n_bins):
    u, log_q = dequantizer(images)
    y = (images.float() + u) / n_bins
    return glowcourse.bits_per_dim(log_prob(y) - log_q, images[0].numel(), n_bins)


def variational_in_nats_first(log_prob, dequantizer, images, n_bins):
    u, log_q = dequantizer(images)
    d = images[0].numel()
    bound = log_prob((images.to(u.dtype) + u) / n_bins) - log_q - d * math.log(n_bins)
    return -bound / (d * math.log(2))


@torch.no_grad()
def per_image_bpd(log_prob, images, n_bins, batch_size=256, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for batch in images.split(batch_size):
        y = glowcourse.dequantize(batch, n_bins, generator)
        out.append(glowcourse.bits_per_dim(log_prob(y), images[0].numel(), n_bins))
    return torch.cat(out)


@torch.no_grad()
def per_image_noise_up_front(log_prob, images, n_bins, batch_size=256, seed=0):
    # all the noise at once, in float64, in another order than the batches: other numbers, same law
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(images.shape, generator=g, dtype=torch.float64).flip(0)
    y = ((images.double() + u) / n_bins).float()
    return torch.cat([glowcourse.bits_per_dim(log_prob(b), images[0].numel(), n_bins) for b in y.split(batch_size)])




# -- correct answers pass, visible and hidden ------------------------------------------------


@pytest.mark.parametrize("fn", [logit_transform, logit_by_logsigmoid])
def test_logit_transform_correct_answers_pass(fn):
    checks.check_logit_transform(fn)
    checks.check_logit_transform(fn, shape=(3, 2, 2, 3), alpha=0.1, seed=1, strict=True)
    checks.check_logit_transform(fn, shape=(1, 1, 4, 4), alpha=0.01, seed=2, strict=True)


@pytest.mark.parametrize("fn", [pixel_space_bpd, pixel_bpd_by_hand])
def test_pixel_space_bpd_correct_answers_pass(fn):
    checks.check_pixel_space_bpd(fn)
    checks.check_pixel_space_bpd(fn, batch=3, n_dims=784, n_bins=256, seed=1, strict=True)


@pytest.mark.parametrize("fn", [variational_bpd, variational_in_nats_first])
def test_variational_bpd_correct_answers_pass(fn):
    checks.check_variational_bpd(fn)
    checks.check_variational_bpd(fn, batch=4, channels=3, size=2, n_bins=5, seed=1, strict=True)


@pytest.mark.parametrize("fn", [per_image_bpd, per_image_noise_up_front])
def test_per_image_bpd_correct_answers_pass(fn):
    checks.check_per_image_bpd(fn)
    checks.check_per_image_bpd(fn, n=33, channels=3, size=2, n_bins=17, batch_size=8, seed=1, strict=True)


def test_checks_leave_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    checks.check_variational_bpd(variational_bpd, strict=True)
    checks.check_per_image_bpd(per_image_bpd, strict=True)
    assert torch.equal(state, torch.random.get_rng_state())


# -- the checks' own reference pieces --------------------------------------------------------


def test_the_reference_logdet_is_the_autograd_one():
    y = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    x, logdet = _logit_reference(y, 0.05)
    assert torch.allclose(logdet, glowcourse.jacobian_logdet(lambda v: _logit_reference(v, 0.05)[0], y))
    assert torch.allclose(torch.sigmoid(x), 0.05 + 0.9 * y)


def test_the_checks_dequantizer_is_a_density_on_the_unit_box():
    # log q(u|x) is the log-density of u: importance sampling from the uniform recovers total mass 1
    torch.manual_seed(0)
    deq = _Dequantizer(1, 5)
    with torch.no_grad():
        for p in deq.parameters():
            p.normal_(0, 0.3)
    images = torch.full((1, 1, 1, 1), 2, dtype=torch.uint8)
    x = images.float() / 4 - 0.5
    with torch.no_grad():
        mu, log_s = deq.net(x).chunk(2, 1)
    u = (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000
    eps = (torch.logit(u) - mu.double().flatten()) / log_s.double().exp().flatten()
    log_density = (F.logsigmoid(eps) + F.logsigmoid(-eps) - log_s.double().flatten()
                   - torch.log(u) - torch.log1p(-u))
    assert abs(float(log_density.exp().mean()) - 1) < 1e-3


def test_uniform_noise_gives_the_usual_bits_per_dim():
    # with q uniform (log q = 0) the bound is the notebook-1 figure
    torch.manual_seed(0)
    images = torch.randint(0, 17, (4, 1, 2, 2), dtype=torch.uint8)
    u = torch.rand(images.shape)
    got = variational_bpd(_Density.log_prob, lambda im: (u, torch.zeros(len(im))), images, 17)
    want = glowcourse.bits_per_dim(_Density.log_prob((images + u) / 17), 4, 17)
    assert torch.allclose(got, want)


# -- logit_transform -------------------------------------------------------------------------


@pytest.mark.parametrize("fn, cause", [
    (lambda y, alpha=0.05: (torch.logit(y), logit_transform(y, alpha)[1]), "without the squash"),
    (lambda y, alpha=0.05: (torch.logit(y, eps=alpha), logit_transform(y, alpha)[1]), "clamps"),
    (lambda y, alpha=0.05: (logit_transform(y, alpha)[0], -logit_transform(y, alpha)[1]), "inverse map"),
    (lambda y, alpha=0.05: (logit_transform(y, alpha)[0], logit_transform(y, alpha)[1] - y[0].numel() * math.log(1 - 2 * alpha)),
     "(1 - 2 alpha) of the squash"),
    (lambda y, alpha=0.05: (logit_transform(y, alpha)[0], logit_transform(y, alpha)[1] / y[0].numel()), "averaged"),
    (lambda y, alpha=0.05: logit_transform(y, 0.05), "alpha argument is ignored"),
])
def test_logit_transform_mistakes_name_their_cause(fn, cause):
    _fails(checks.check_logit_transform, fn, match="logit_transform", cause=cause)


def test_logit_transform_unexplained_logdet_gets_no_guess():
    def noisy(y, alpha=0.05):
        x, logdet = logit_transform(y, alpha)
        return x, logdet + torch.linspace(0.1, 1.0, len(y), dtype=y.dtype) ** 2
    _fails(checks.check_logit_transform, noisy, match="autograd", cause=None)


def test_logit_transform_without_squash_fails_the_hidden_check_on_exact_zeros():
    def unsquashed_in_float32(y, alpha=0.05):  # right in float64 (the visible check), logit(0) = -inf in float32
        x, logdet = logit_transform(y, alpha)
        return (x, logdet) if y.dtype == torch.float64 else (torch.logit(y), logdet)
    checks.check_logit_transform(unsquashed_in_float32)
    _fails(checks.check_logit_transform, unsquashed_in_float32, strict=True, match="inf or NaN")


# -- pixel_space_bpd -------------------------------------------------------------------------


@pytest.mark.parametrize("fn, cause", [
    (lambda lp, ld, d, b: glowcourse.bits_per_dim(lp, d, b), "log-det is missing"),
    (lambda lp, ld, d, b: glowcourse.bits_per_dim(lp - ld, d, b), "subtracted"),
    (lambda lp, ld, d, b: -(lp + ld) / (d * math.log(2)), "D log n_bins"),
    (lambda lp, ld, d, b: (-(lp + ld) + d * math.log(b)) / d, "nats"),
    (lambda lp, ld, d, b: glowcourse.bits_per_dim(lp + ld, d, b).mean(), "single number"),
])
def test_pixel_space_bpd_mistakes_name_their_cause(fn, cause):
    _fails(checks.check_pixel_space_bpd, fn, match="pixel_space_bpd", cause=cause)


def test_pixel_space_bpd_from_detached_numbers_fails_the_hidden_check():
    def detached(lp, ld, d, b):
        return torch.tensor([pixel_space_bpd(a, c, d, b).item() for a, c in zip(lp, ld)], dtype=lp.dtype)
    checks.check_pixel_space_bpd(detached)  # the value is right
    _fails(checks.check_pixel_space_bpd, detached, strict=True, match="gradient")


# -- variational_bpd -------------------------------------------------------------------------


@pytest.mark.parametrize("fn, cause", [
    (lambda lp, dq, im, b: (lambda u, q: glowcourse.bits_per_dim(lp((im + u) / b), im[0].numel(), b))(*dq(im)),
     "log q(u|x) is missing"),
    (lambda lp, dq, im, b: (lambda u, q: glowcourse.bits_per_dim(lp((im + u) / b) + q, im[0].numel(), b))(*dq(im)),
     "sign of log q"),
    (lambda lp, dq, im, b: (lambda u, q: glowcourse.bits_per_dim(lp(im + u) - q, im[0].numel(), b))(*dq(im)),
     "divide by n_bins"),
    (lambda lp, dq, im, b: (lambda u, q: glowcourse.bits_per_dim(lp((im + u.detach()) / b) - q, im[0].numel(), b))(*dq(im)),
     "u was detached"),
    (lambda lp, dq, im, b: (lambda u, q: glowcourse.bits_per_dim(lp((im + torch.rand_like(u)) / b) - q, im[0].numel(), b))(*dq(im)),
     "not the dequantizer's u"),
    (lambda lp, dq, im, b: (lambda u, q: glowcourse.bits_per_dim(lp((im + u) / b) - q, im.shape[-1] * im.shape[-2], b))(*dq(im)),
     "without the channels"),
])
def test_variational_bpd_mistakes_name_their_cause(fn, cause):
    channels = 2 if cause == "without the channels" else 1
    _fails(checks.check_variational_bpd, fn, channels=channels, match="variational_bpd", cause=cause)


def test_variational_bpd_without_gradient_fails_naming_no_grad():
    _fails(checks.check_variational_bpd, torch.no_grad()(variational_bpd), match="no gradient", cause="no_grad")


def test_variational_bpd_calling_the_dequantizer_twice_fails():
    def twice(log_prob, dequantizer, images, n_bins):
        u = dequantizer(images)[0]
        log_q = dequantizer(images)[1]
        return glowcourse.bits_per_dim(log_prob((images + u) / n_bins) - log_q, images[0].numel(), n_bins)
    _fails(checks.check_variational_bpd, twice, match="called 2 times")


# -- per_image_bpd ---------------------------------------------------------------------------


def _per_image(noise=lambda batch, n_bins, g: glowcourse.dequantize(batch, n_bins, g), dims=lambda im: im[0].numel(),
               reduce=lambda bpd, batch: bpd, generator=lambda seed: torch.Generator().manual_seed(seed), bins=None):
    @torch.no_grad()
    def fn(log_prob, images, n_bins, batch_size=256, seed=0):
        g = generator(seed)
        b = bins or n_bins
        return torch.cat([reduce(glowcourse.bits_per_dim(log_prob(noise(batch, b, g)), dims(images), b), batch)
                          for batch in images.split(batch_size)])
    return fn


@pytest.mark.parametrize("fn, cause", [
    (_per_image(reduce=lambda bpd, batch: bpd.mean().expand(len(batch))), "mean of its batch"),
    (_per_image(noise=lambda batch, n_bins, g: batch.float() / n_bins), "no dequantization noise"),
    (_per_image(noise=lambda batch, n_bins, g: (batch.float() + 0.5) / n_bins), "no dequantization noise"),
    (_per_image(generator=lambda seed: None), "seeded with `seed`"),
    (_per_image(generator=lambda seed: torch.manual_seed(seed) and None), "global generator was seeded"),
    (_per_image(dims=lambda im: im.shape[-1] * im.shape[-2]), "without the channels"),
    (_per_image(bins=17), "17 levels"),
    (_per_image(noise=lambda batch, n_bins, g: glowcourse.dequantize(batch, n_bins, g) - 0.5), "centred"),
])
def test_per_image_bpd_mistakes_name_their_cause(fn, cause):
    _fails(checks.check_per_image_bpd, fn, match="per_image_bpd", cause=cause)


def test_per_image_bpd_returning_the_mean_fails_naming_it():
    _fails(checks.check_per_image_bpd, lambda *a, **k: per_image_bpd(*a, **k).mean(), match="one value per image",
           cause="single number")


def test_per_image_bpd_reordered_images_fail_naming_it():
    def reordered(log_prob, images, n_bins, batch_size=256, seed=0):
        return per_image_bpd(log_prob, images.flip(0), n_bins, batch_size, seed).flip(0)
    # the log_prob calls come in another order than the images: named as a reordering
    _fails(checks.check_per_image_bpd, reordered, match="not a dequantization", cause="reordered")


def test_per_image_bpd_ignoring_the_seed_fails_the_hidden_check_only():
    fn = _per_image(generator=lambda seed: torch.Generator().manual_seed(0))
    checks.check_per_image_bpd(fn)
    _fails(checks.check_per_image_bpd, fn, seed=3, strict=True, match="another seed")
