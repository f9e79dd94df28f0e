"""Notebook 5's checks on what the models compute: learned priors in the density and in the
samples, the flow step's composition, the latent order at L = 3, shapes before values, the
gradient of log p(x), and the properties only the hidden (strict) calls test."""
import numpy as np
import pytest
import torch

from glowcourse import checks, flows


def glow_variant(**kwargs):
    def build(in_channels, K, L, hidden, image_size):
        return flows.Glow(in_channels, K, L, hidden, image_size, **kwargs)
    return build


def step_variant(**kwargs):
    def build(channels, hidden):
        return flows.FlowStep(channels, hidden, **kwargs)
    return build


@pytest.mark.parametrize("build", [flows.Glow, glow_variant(conditional_prior=False), glow_variant(affine=False),
                                   glow_variant(permutation="reverse")],
                         ids=["reference", "unconditional-prior", "additive", "reverse"])
def test_reference_glows_pass_visible_and_strict(build):
    checks.check_glow(build)
    checks.check_glow(build, K=2, L=2, image_size=4, batch=3, seed=5, strict=True)
    checks.check_glow(build, K=3, L=3, image_size=8, batch=2, seed=6, in_channels=2, strict=True)


def test_reference_layers_pass_strict():
    checks.check_squeeze(flows.squeeze, flows.unsqueeze, channels=2, hw=(2, 2), batch=1, strict=True)
    for split in (flows.Split, lambda c: flows.Split(c, conditional=False)):
        checks.check_split(split, channels=6, batch=2, hw=(3, 3), seed=3, strict=True)
        checks.check_split(split, channels=2, batch=1, hw=(2, 2), seed=4, dtype=torch.float32, strict=True)
    for step in (flows.FlowStep, step_variant(permutation="dense"), step_variant(affine=False)):
        checks.check_flow_step(step, channels=6, batch=2, hw=(3, 2), seed=4, strict=True)
        checks.check_flow_step(step, channels=2, batch=1, hw=(2, 2), seed=5, dtype=torch.float32, strict=True)


@pytest.mark.parametrize("seed", range(6))
def test_glow_check_is_stable_across_seeds(seed):
    checks.check_glow(flows.Glow, seed=seed, strict=True)


def std_normal(z):
    return flows.gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))


class StandardPriorGlow(flows.Glow):
    """The review's case: every latent scored under N(0, I) and drawn as T * randn (the
    learned priors ignored), which passed while the checks left the priors at their init."""

    def forward(self, x):
        zs, logdet = [], 0
        for i, steps in enumerate(self.levels):
            x = flows.squeeze(x)
            for step in steps:
                x, ld = step(x)
                logdet = logdet + ld
            if i < len(self.splits):
                x, z, _ = self.splits[i](x)
                zs.append(z)
        zs.append(x)
        return zs, logdet + sum(std_normal(z) for z in zs)

    @torch.no_grad()
    def sample(self, n, temperature=1.0):
        x = temperature * torch.randn(n, *self.top_shape, dtype=self.prior_mean.dtype)
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                x = self.splits[i].inverse(x, temperature * torch.randn_like(x))
            for step in reversed(self.levels[i]):
                x, _ = step.inverse(x)
            x = flows.unsqueeze(x)
        return x


class StandardPriorSampleGlow(StandardPriorGlow):
    forward = flows.Glow.forward


def test_learned_priors_are_checked_in_the_density_and_in_the_samples():
    with pytest.raises(checks.CheckFailed, match=r"(?s)log p\(x\).*model's own priors"):
        checks.check_glow(StandardPriorGlow)
    with pytest.raises(checks.CheckFailed, match=r"(?s)temperature 0.*Likely cause.*instead of the split's learned prior"):
        checks.check_glow(StandardPriorSampleGlow)


class NoSplitTerm(flows.Glow):
    """log p(x) without the split latents' (learned) prior log-densities."""

    def forward(self, x):
        zs, log_prob = [], 0
        for i, steps in enumerate(self.levels):
            x = flows.squeeze(x)
            for step in steps:
                x, ld = step(x)
                log_prob = log_prob + ld
            if i < len(self.splits):
                x, z, _ = self.splits[i](x)
                zs.append(z)
        zs.append(x)
        return zs, log_prob + flows.gaussian_log_prob(x, self.prior_mean, self.prior_log_sd)


def test_missing_split_term_is_named():
    with pytest.raises(checks.CheckFailed, match="split-off latents is missing"):
        checks.check_glow(NoSplitTerm)


class TopPriorDetached(flows.Glow):
    def forward(self, x):
        zs, log_prob = super().forward(x)
        top = flows.gaussian_log_prob(zs[-1], self.prior_mean, self.prior_log_sd)
        return zs, log_prob - top + top.detach()


def test_gradient_of_log_p_is_checked_against_the_brute_force():
    with pytest.raises(checks.CheckFailed, match=r"(?s)right value, but its gradient.*no gradient flows through the top prior"):
        checks.check_glow(TopPriorDetached)


class SkipsConv(flows.FlowStep):
    def forward(self, x):
        x, ld1 = self.actnorm(x)
        x, ld3 = self.coupling(x)
        return x, ld1 + ld3

    def inverse(self, y):
        y, ld3 = self.coupling.inverse(y)
        y, ld1 = self.actnorm.inverse(y)
        return y, ld1 + ld3


class CouplingFirst(flows.FlowStep):
    def forward(self, x):
        x, ld3 = self.coupling(x)
        x, ld1 = self.actnorm(x)
        x, ld2 = self.invconv(x)
        return x, ld1 + ld2 + ld3

    def inverse(self, y):
        y, ld2 = self.invconv.inverse(y)
        y, ld1 = self.actnorm.inverse(y)
        y, ld3 = self.coupling.inverse(y)
        return y, ld1 + ld2 + ld3


def test_flow_step_is_checked_on_what_it_computes():
    # Both are valid flows (invertible, log-det right), so only the composition shows them.
    with pytest.raises(checks.CheckFailed, match=r"(?s)it is self.actnorm -> self.coupling.*1x1 convolution is never applied"):
        checks.check_flow_step(SkipsConv)
    with pytest.raises(checks.CheckFailed, match=r"(?s)Likely cause: the layers are applied in another order \(self.coupling -> self.actnorm -> self.invconv\)"):
        checks.check_flow_step(CouplingFirst)


class ReversedLatentsInverse(flows.Glow):
    def inverse(self, zs):
        return super().inverse(list(reversed(zs[:-1])) + [zs[-1]])


def test_latent_order_shows_in_the_visible_check_as_a_message():
    # With L = 2 (one split) the order cannot show; the visible default is L = 3.
    checks.check_glow(ReversedLatentsInverse, L=2, image_size=4)
    with pytest.raises(checks.CheckFailed, match=r"(?s)inverse\(zs\) raised RuntimeError.*zs\[i\] belongs to split i"):
        checks.check_glow(ReversedLatentsInverse)


class InverseWithoutLastUnsqueeze(flows.Glow):
    def inverse(self, zs):
        return flows.squeeze(super().inverse(zs))


def test_inverse_shape_is_checked_before_values():
    with pytest.raises(checks.CheckFailed) as err:
        checks.check_glow(InverseWithoutLastUnsqueeze)
    assert "expected shape (2, 1, 8, 8)" in str(err.value) and "nan" not in str(err.value)


class Float32Noise(flows.Glow):
    @torch.no_grad()
    def sample(self, n, temperature=1.0):
        mean = self.prior_mean.expand(n, *self.top_shape)
        x = (mean + temperature * torch.exp(self.prior_log_sd) * torch.randn_like(mean)).float()
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                x = self.splits[i].inverse(x, None, temperature)
            for step in reversed(self.levels[i]):
                x, _ = step.inverse(x)
            x = flows.unsqueeze(x)
        return x


class SampleStepsInForwardOrder(flows.Glow):
    @torch.no_grad()
    def sample(self, n, temperature=1.0):
        mean = self.prior_mean.expand(n, *self.top_shape)
        x = mean + temperature * torch.exp(self.prior_log_sd) * torch.randn_like(mean)
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                x = self.splits[i].inverse(x, None, temperature)
            for step in self.levels[i]:
                x, _ = step.inverse(x)
            x = flows.unsqueeze(x)
        return x


def test_sampling_messages():
    with pytest.raises(checks.CheckFailed, match=r"(?s)\.sample.*raised.*Likely cause: part of sample works in float32"):
        checks.check_glow(Float32Noise)
    with pytest.raises(checks.CheckFailed, match=r"(?s)sample decodes the latents differently from inverse.*forward's order"):
        checks.check_glow(SampleStepsInForwardOrder)


# Properties only the hidden (strict) calls test: each passes the visible call and fails strict.


def squeeze_numpy(x):
    b, c, h, w = x.shape
    a = x.detach().numpy().reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 5, 2, 4)
    return torch.from_numpy(np.ascontiguousarray(a)).reshape(b, 4 * c, h // 2, w // 2)


class SplitDecodesMeanAtZero(flows.Split):
    def inverse(self, x_a, z=None, temperature=1.0):
        if z is None or temperature == 0:
            mean, log_sd = self.prior_params(x_a)
            z = mean + temperature * torch.exp(log_sd) * torch.randn_like(mean)
        return torch.cat([x_a, z], 1)


class CachingStep(flows.FlowStep):
    def forward(self, x):
        self._last = x
        return super().forward(x)

    def inverse(self, y):
        _, ld = super().inverse(y)
        return self._last, ld


def test_hidden_properties_are_new():
    checks.check_squeeze(squeeze_numpy, flows.unsqueeze)
    with pytest.raises(checks.CheckFailed, match="no gradient"):
        checks.check_squeeze(squeeze_numpy, flows.unsqueeze, strict=True)
    checks.check_split(SplitDecodesMeanAtZero)
    with pytest.raises(checks.CheckFailed, match="a given z is decoded as it is"):
        checks.check_split(SplitDecodesMeanAtZero, strict=True)
    checks.check_flow_step(CachingStep)
    with pytest.raises(checks.CheckFailed, match=r"(?s)a point forward did not produce.*last input of forward"):
        checks.check_flow_step(CachingStep, strict=True)


def test_split_sampling_names_the_formula():
    class NoPriorStd(flows.Split):
        def inverse(self, x_a, z=None, temperature=1.0):
            if z is None:
                z = self.prior_params(x_a)[0] + temperature * torch.randn_like(x_a)
            return torch.cat([x_a, z], 1)

    with pytest.raises(checks.CheckFailed, match="not scaled by the prior's standard deviation"):
        checks.check_split(NoPriorStd)


def test_checks_leave_the_random_state_as_found():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    checks.check_glow(flows.Glow)
    checks.check_split(flows.Split)
    checks.check_flow_step(flows.FlowStep)
    assert torch.equal(state, torch.get_rng_state())
