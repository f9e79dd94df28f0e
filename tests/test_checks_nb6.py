"""Notebook 6's checks, function by function: correct answers written other ways pass, visible
and hidden (``strict``) alike; the wrong answers fail with the message that names their cause,
and a wrong answer the checks cannot pin down gets no guessed cause.

The catalogue (autograder/mistakes/06_glow_in_practice.toml) runs the same mistakes through the
notebook's own cells (tests/test_checks.py); these tests pin the properties themselves.
"""
import math

import pytest
import torch

import glowcourse
from glowcourse import checks
from glowcourse.checks.capstone import _narrow_glow, _standardised, tiny_glow

# -- the reference answers (as in the solution notebook) and correct variants ---------------


def to_model(images, n_bins, generator=None):
    return glowcourse.dequantize(images, n_bins, generator) - 0.5


@torch.no_grad()
def evaluate_bpd(model, images, n_bins, batch_size=256, seed=0):
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for batch in images.split(batch_size):
        total += glowcourse.bits_per_dim(model(to_model(batch, n_bins, generator))[1], images[0].numel(), n_bins).sum().item()
    return total / len(images)


@torch.no_grad()
def evaluate_weighted_batch_means(model, images, n_bins, batch_size=256, seed=0):
    # batch means, each weighted by its batch's size: the same figure
    generator = torch.Generator().manual_seed(seed)
    means, sizes = [], []
    for batch in images.split(batch_size):
        means.append(glowcourse.bits_per_dim(model(to_model(batch, n_bins, generator))[1], images[0].numel(), n_bins).mean())
        sizes.append(len(batch))
    return float((torch.stack(means) * torch.tensor(sizes, dtype=torch.float32)).sum() / sum(sizes))


@torch.no_grad()
def evaluate_own_noise_order(model, images, n_bins, batch_size=256, seed=0):
    # all the noise up front with uniform_, in float64, then batches of its own size: other numbers, same figure
    g = torch.Generator().manual_seed(seed)
    u = torch.empty(images.shape, dtype=torch.float64).uniform_(generator=g)
    y = ((images.double() + u) / n_bins - 0.5).float()
    bpd = torch.cat([glowcourse.bits_per_dim(model(b)[1], images[0].numel(), n_bins) for b in y.split(17)])
    return bpd.mean()


@torch.no_grad()
def sample_images(model, n, temperature):
    return (model.sample(n, temperature) + 0.5).clamp(0, 1)


@torch.no_grad()
def sample_by_hand(model, n, temperature):
    # the latents drawn level by level, top first, in another order than model.sample: other numbers, same law
    mean = model.prior_mean.expand(n, *model.top_shape)
    x = mean + temperature * torch.exp(model.prior_log_sd) * torch.randn(mean.shape).flip(0)
    for i in reversed(range(len(model.levels))):
        if i < len(model.splits):
            m, log_sd = model.splits[i].prior_params(x)
            x = torch.cat([x, m + temperature * torch.exp(log_sd) * torch.randn_like(m)], 1)
        for step in reversed(model.levels[i]):
            x, _ = step.inverse(x)
        x = glowcourse.flows.unsqueeze(x)
    return torch.clamp(x + 0.5, 0.0, 1.0)


@torch.no_grad()
def interpolate(model, x1, x2, steps):
    z1, z2 = model(x1)[0], model(x2)[0]
    t = torch.linspace(0, 1, steps).view(-1, 1, 1, 1)
    return model.inverse([(1 - t) * a + t * b for a, b in zip(z1, z2)])


@torch.no_grad()
def interpolate_lerp(model, x1, x2, steps):
    z1, z2 = model(x1)[0], model(x2)[0]
    return torch.cat([model.inverse([torch.lerp(a, b, float(t)) for a, b in zip(z1, z2)]) for t in torch.linspace(0, 1, steps)])


@torch.no_grad()
def class_direction(model, x, labels, a, b):
    zs = model(x)[0]
    return [z[labels == a].mean(0, keepdim=True) - z[labels == b].mean(0, keepdim=True) for z in zs]


@torch.no_grad()
def direction_without_batch_dim(model, x, labels, a, b):
    return [z[labels == a].mean(0) - z[labels == b].mean(0) for z in model(x)[0]]


@torch.no_grad()
def manipulate(model, x, direction, scale):
    zs = model(x)[0]
    return model.inverse([z + scale * d for z, d in zip(zs, direction)])


@torch.no_grad()
def manipulate_in_place_on_own_latents(model, x, direction, scale):
    zs = model(x)[0]
    for z, d in zip(zs, direction):  # the latents are this function's own: adding in place is fine
        z.add_(scale * d.reshape(1, *z.shape[1:]))
    return model.inverse(zs)


def _fails(check, *args, match, cause=None, **kwargs):
    with pytest.raises(checks.CheckFailed, match=match) as err:
        check(*args, **kwargs)
    message = str(err.value)
    if cause is None:
        assert "Likely cause" not in message, message
    else:
        assert "Likely cause" in message and cause.lower() in message.split("Likely cause:", 1)[1].lower(), message
    return message


# -- correct answers pass, visible and hidden ------------------------------------------------


@pytest.mark.parametrize("fn", [evaluate_bpd, evaluate_weighted_batch_means, evaluate_own_noise_order])
def test_evaluate_bpd_correct_answers_pass(fn):
    checks.check_evaluate_bpd(fn)
    checks.check_evaluate_bpd(fn, n=130, batch_size=50, channels=2, seed=3, strict=True)


@pytest.mark.parametrize("fn", [sample_images, sample_by_hand])
def test_sample_images_correct_answers_pass(fn):
    checks.check_sample_images(fn)
    checks.check_sample_images(fn, n=48, seed=4, temperatures=(0.3, 0.8), strict=True)


@pytest.mark.parametrize("fn", [interpolate, interpolate_lerp])
def test_interpolate_correct_answers_pass(fn):
    checks.check_interpolate(fn)
    checks.check_interpolate(fn, steps=2, seed=5, strict=True)
    checks.check_interpolate(fn, steps=9, seed=6, channels=3, strict=True)


@pytest.mark.parametrize("direction, move", [(class_direction, manipulate), (direction_without_batch_dim, manipulate),
                                             (class_direction, manipulate_in_place_on_own_latents)])
def test_manipulate_correct_answers_pass(direction, move):
    checks.check_manipulate(direction, move)
    checks.check_manipulate(direction, move, n=31, seed=7, strict=True)


def test_checks_leave_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    checks.check_sample_images(sample_images)
    checks.check_evaluate_bpd(evaluate_bpd, strict=True)
    assert torch.equal(state, torch.random.get_rng_state())


# -- evaluate_bpd ----------------------------------------------------------------------------


@torch.no_grad()
def bpd_mean_of_batch_means(model, images, n_bins, batch_size=256, seed=0):
    generator = torch.Generator().manual_seed(seed)
    means = [glowcourse.bits_per_dim(model(to_model(b, n_bins, generator))[1], images[0].numel(), n_bins).mean().item()
             for b in images.split(batch_size)]
    return sum(means) / len(means)


def test_evaluate_bpd_mean_of_batch_means_fails_visibly_and_hidden_with_its_cause():
    msg = _fails(checks.check_evaluate_bpd, bpd_mean_of_batch_means, match="expected", cause="batch means")
    assert "last batch holds only 6 images" in msg
    _fails(checks.check_evaluate_bpd, bpd_mean_of_batch_means, n=130, batch_size=50, channels=2, seed=3, strict=True,
           match="expected", cause="batch means")


def test_the_short_last_batch_separates_the_two_means_clearly():
    # what the visible check's inputs give: the two figures differ by far more than its tolerance of 0.02
    model = tiny_glow(0, in_channels=3)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 17, (70, 3, 8, 8), generator=g).to(torch.uint8)
    images[-6:] = 0
    assert abs(evaluate_bpd(model, images, 17, 32) - bpd_mean_of_batch_means(model, images, 17, 32)) > 0.3


@pytest.mark.parametrize("change, cause", [
    (lambda s: s.replace("images[0].numel()", "images.shape[-1] * images.shape[-2]"), "without the channels"),
    (lambda s: s.replace("bits_per_dim(model(to_model(batch, n_bins, generator))[1], images[0].numel(), n_bins)",
                         "bits_per_dim(model(to_model(batch, n_bins, generator))[1], images[0].numel(), 256)"), "256"),
    (lambda s: s.replace("to_model(batch, n_bins, generator)", "to_model(batch, n_bins, generator) + 0.5"), "not centred"),
    (lambda s: s.replace("torch.Generator().manual_seed(seed)", "None"), "not drawn from a generator seeded"),
])
def test_evaluate_bpd_mistakes_name_their_cause(change, cause):
    import inspect
    import textwrap

    source = change(textwrap.dedent(inspect.getsource(evaluate_bpd)))
    ns = {"torch": torch, "glowcourse": glowcourse, "to_model": to_model}
    exec(source, ns)
    _fails(checks.check_evaluate_bpd, ns["evaluate_bpd"], match="evaluate_bpd", cause=cause)


def test_evaluate_bpd_an_unrelated_wrong_figure_gets_no_guessed_cause():
    _fails(checks.check_evaluate_bpd, lambda *a: evaluate_bpd(*a) + 0.3, match="expected")
    _fails(checks.check_evaluate_bpd, lambda *a: evaluate_bpd(*a) * 1.1, match="expected")


def test_evaluate_bpd_hidden_flags_a_globally_seeded_evaluation():
    @torch.no_grad()
    def seeds_globally(model, images, n_bins, batch_size=256, seed=0):
        torch.manual_seed(seed)
        return evaluate_bpd.__wrapped__(model, images, n_bins, batch_size, seed)

    checks.check_evaluate_bpd(seeds_globally)  # the visible check does not test this property
    _fails(checks.check_evaluate_bpd, seeds_globally, strict=True, match="global random state", cause="torch.Generator of its own")


def test_evaluate_bpd_must_not_change_the_model():
    def trains(model, images, n_bins, batch_size=256, seed=0):
        with torch.no_grad():
            model.prior_mean.add_(0.1)
        return evaluate_bpd(model, images, n_bins, batch_size, seed)

    _fails(checks.check_evaluate_bpd, trains, match="changed the model")


# -- sample_images -----------------------------------------------------------------------------


def test_sample_temperature_on_the_variance_fails_and_says_why():
    msg = _fails(checks.check_sample_images, lambda m, n, t: sample_images(m, n, math.sqrt(t)), match="spread", cause="variance")
    assert "standard deviation by T" in msg
    _fails(checks.check_sample_images, lambda m, n, t: sample_images(m, n, math.sqrt(t)), n=48, seed=4, temperatures=(0.3, 0.8),
           strict=True, match="spread", cause="variance")


def test_sample_temperature_squared_and_ignored_are_named():
    _fails(checks.check_sample_images, lambda m, n, t: sample_images(m, n, t * t), match="spread", cause="applied twice")
    _fails(checks.check_sample_images, lambda m, n, t: sample_images(m, n, 1.0), match="temperature 0", cause="temperature is ignored")


def test_sample_mapping_mistakes_are_named():
    _fails(checks.check_sample_images, lambda m, n, t: m.sample(n, t).clamp(0, 1), match="prior means", cause="not shifted back")
    _fails(checks.check_sample_images, lambda m, n, t: (m.sample(n, t) + 1).clamp(0, 1), match="prior means", cause="1 was added")
    _fails(checks.check_sample_images, lambda m, n, t: m.sample(n, t) + 0.5, match="must lie in", cause="clamp")


def test_sample_reseeded_every_call_is_named():
    def reseeds(model, n, t):
        torch.manual_seed(0)
        return sample_images(model, n, t)

    _fails(checks.check_sample_images, reseeds, match="same images", cause="re-seeded")


def test_sample_hidden_properties():
    def one_sample_repeated(model, n, t):
        return sample_images(model, 1, t).expand(n, -1, -1, -1)

    def uneven_levels(model, n, t):  # 0.75 T at the top, 1.2 T in the split: the overall spread is T, each level's is not
        with torch.no_grad():
            mean = model.prior_mean.expand(n, *model.top_shape)
            x = mean + 0.75 * t * torch.exp(model.prior_log_sd) * torch.randn(mean.shape)
            for i in reversed(range(len(model.levels))):
                if i < len(model.splits):
                    x = model.splits[i].inverse(x, None, 1.2 * t)
                for step in reversed(model.levels[i]):
                    x, _ = step.inverse(x)
                x = glowcourse.flows.unsqueeze(x)
            return (x + 0.5).clamp(0, 1)

    for fn, match in ((one_sample_repeated, "identical"), (uneven_levels, "level 0")):
        checks.check_sample_images(fn)  # the visible check does not test these properties
        with pytest.raises(checks.CheckFailed, match=match):
            checks.check_sample_images(fn, n=48, seed=4, temperatures=(0.3, 0.8), strict=True)


def test_the_narrow_model_needs_no_clamping_and_encodes_back():
    model = _narrow_glow(0)
    torch.manual_seed(0)
    x = model.sample(64, 1.0)
    assert x.abs().max() < 0.4
    eps = _standardised(model, x)
    rms = float(torch.cat([e.flatten() for e in eps]).pow(2).mean().sqrt())
    assert abs(rms - 1) < 0.05


# -- interpolate -------------------------------------------------------------------------------


@pytest.mark.parametrize("fn, cause", [
    (lambda m, a, b, s: (interpolate(m, a, b, s) + 0.5).clamp(0, 1), "model space"),
    (lambda m, a, b, s: interpolate(m, b, a, s), "from x2 to x1"),
    (lambda m, a, b, s: (lambda t: (1 - t) * a + t * b)(torch.linspace(0, 1, s).view(-1, 1, 1, 1)), "pixel space"),
])
def test_interpolate_mistakes_name_their_cause(fn, cause):
    _fails(checks.check_interpolate, fn, match="interpolate", cause=cause)


def test_interpolate_unrelated_error_gets_no_guess():
    _fails(checks.check_interpolate, lambda m, a, b, s: interpolate(m, a, b, s) * 1.01, match="off the line|on the line")


# -- class_direction / manipulate ----------------------------------------------------------------


@torch.no_grad()
def manipulate_scales_direction_in_place(model, x, direction, scale):
    zs = model(x)[0]
    for d in direction:
        d.mul_(scale)
    return model.inverse([z + d for z, d in zip(zs, direction)])


def test_manipulate_scaling_the_callers_direction_in_place_fails():
    msg = _fails(checks.check_manipulate, class_direction, manipulate_scales_direction_in_place, match="direction changed",
                 cause="in place")
    assert "d *= scale" in msg


def test_manipulate_mistakes_name_their_cause():
    @torch.no_grad()
    def minus_rest(model, x, labels, a, b):
        return [z[labels == a].mean(0, keepdim=True) - z[labels != a].mean(0, keepdim=True) for z in model(x)[0]]

    @torch.no_grad()
    def ignores_scale(model, x, direction, scale):
        return manipulate(model, x, direction, 1.0 if scale else 0.0)

    _fails(checks.check_manipulate, minus_rest, manipulate, match="differs", cause="outside class a")
    _fails(checks.check_manipulate, class_direction, ignores_scale, match="did not move", cause="scale was ignored")


def test_manipulate_hidden_properties():
    # Contrived answers, right exactly where the visible check looks and wrong elsewhere: they pin
    # down that the hidden test checks each property itself.
    @torch.no_grad()
    def order_dependent(model, x, labels, a, b):
        if torch.equal(labels, torch.arange(len(labels)) % 3):  # the visible check's order
            return class_direction(model, x, labels, a, b)
        return class_direction(model, x[:-3], labels[:-3], a, b)

    @torch.no_grad()
    def not_additive(model, x, direction, scale):
        return manipulate(model, x, direction, scale if scale in (0.0, 1.5) else scale**2)

    @torch.no_grad()
    def batch_dependent(model, x, direction, scale):
        return manipulate(model, x, direction, scale if len(x) > 1 else 0.5 * scale)

    for direction, move, match in ((order_dependent, manipulate, "order of the images"),
                                   (class_direction, not_additive, "then by 1.0"),
                                   (class_direction, batch_dependent, "on its own")):
        checks.check_manipulate(direction, move)
        with pytest.raises(checks.CheckFailed, match=match):
            checks.check_manipulate(direction, move, n=31, seed=7, strict=True)


def test_interpolate_hidden_property():
    calls = []

    @torch.no_grad()
    def sorts_its_ends_after_the_first_call(model, x1, x2, steps):  # contrived: right on the visible check's one call
        calls.append(1)
        if len(calls) > 1 and float(x1.sum()) > float(x2.sum()):
            x1, x2 = x2, x1
        return interpolate(model, x1, x2, steps)

    checks.check_interpolate(sorts_its_ends_after_the_first_call)
    calls.clear()
    with pytest.raises(checks.CheckFailed, match="reverse"):
        for seed in (5, 6, 7, 8):
            calls.clear()
            checks.check_interpolate(sorts_its_ends_after_the_first_call, steps=3, seed=seed, strict=True)


# -- train_step ----------------------------------------------------------------------------------

from torch import nn  # noqa: E402


def train_step(model_log_prob, model, optimizer, x, n_bins, *, step, lr, warmup, clip):
    for group in optimizer.param_groups:
        group["lr"] = lr * min(1.0, step / warmup)
    loss = glowcourse.bits_per_dim(model_log_prob(x), x[0].numel(), n_bins).mean()
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


def train_step_by_hand(model_log_prob, model, optimizer, x, n_bins, *, step, lr, warmup, clip):
    # the rate as min(lr, ...), zeroed through the model, the norm clipped by hand (without clip_grad_norm_'s 1e-6)
    model.zero_grad(set_to_none=False)
    for group in optimizer.param_groups:
        group["lr"] = min(lr, lr * step / warmup)
    log_p = model_log_prob(x)
    loss = ((-log_p + x[0].numel() * math.log(n_bins)) / (x[0].numel() * math.log(2))).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    if norm > clip:
        for g in grads:
            g.mul_(clip / norm)
    value = float(loss)
    optimizer.step()
    return value


def _variant(source_fn, *replacements):
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(source_fn))
    for old, new in replacements:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    ns = {"torch": torch, "glowcourse": glowcourse, "nn": nn, "math": math}
    exec(source, ns)
    return ns[source_fn.__name__]


@pytest.mark.parametrize("fn", [train_step, train_step_by_hand])
def test_train_step_correct_answers_pass(fn):
    checks.check_train_step(fn)
    checks.check_train_step(fn, seed=3, channels=3, strict=True)


@pytest.mark.parametrize("replacements, match, cause", [
    ([("    optimizer.zero_grad()\n", "")], "moved by", "not zeroed"),
    ([("    nn.utils.clip_grad_norm_(model.parameters(), clip)\n    optimizer.step()\n",
       "    optimizer.step()\n    nn.utils.clip_grad_norm_(model.parameters(), clip)\n")], "moved by", "after optimizer.step()"),
    ([("    nn.utils.clip_grad_norm_(model.parameters(), clip)\n", "")], "moved by", "not clipped"),
    ([("nn.utils.clip_grad_norm_(model.parameters(), clip)", "nn.utils.clip_grad_value_(model.parameters(), clip)")],
     "moved by", "clip_grad_value_"),
    ([("nn.utils.clip_grad_norm_(model.parameters(), clip)", "[nn.utils.clip_grad_norm_(p, clip) for p in model.parameters()]")],
     "moved by", "on its own"),
    ([("    for group in optimizer.param_groups:\n        group[\"lr\"] = lr * min(1.0, step / warmup)\n", "")],
     "learning rates", "no warm-up"),
    ([("lr * min(1.0, step / warmup)", "lr")], "learning rates", "warm-up is missing"),
    ([("lr * min(1.0, step / warmup)", "lr * step / warmup")], "learning rates", "keeps growing"),
    ([("    for group in optimizer.param_groups:\n        group[\"lr\"]", "    for group in optimizer.param_groups[:1]:\n        group[\"lr\"]")],
     "learning rates", "first param group"),
    ([("return loss.item()", "return glowcourse.bits_per_dim(model_log_prob(x), x[0].numel(), n_bins).mean().item()")],
     "before the update", "after optimizer.step()"),
    ([("return loss.item()", "return loss")], "not a Python float", "loss.item()"),
    ([("model_log_prob(x)", "model(x)[1]")], "never called", "model_log_prob"),
    ([("    optimizer.step()\n", "")], "where it was", "step() was not called"),
])
def test_train_step_mistakes_name_their_cause(replacements, match, cause):
    wrong = _variant(train_step, *replacements)
    _fails(checks.check_train_step, wrong, match=match, cause=cause)
    with pytest.raises(checks.CheckFailed):
        checks.check_train_step(wrong, seed=3, channels=3, strict=True)


def test_train_step_hidden_properties():
    def always_to_clip(model_log_prob, model, optimizer, x, n_bins, *, step, lr, warmup, clip):
        # scales every gradient to norm clip: right whenever clipping binds, as in the visible check
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, step / warmup)
        loss = glowcourse.bits_per_dim(model_log_prob(x), x[0].numel(), n_bins).mean()
        optimizer.zero_grad()
        loss.backward()
        norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
        for p in model.parameters():
            p.grad.mul_(clip / (norm + 1e-6))
        optimizer.step()
        return loss.item()

    checks.check_train_step(always_to_clip)  # the visible check does not test this property
    _fails(checks.check_train_step, always_to_clip, seed=3, channels=3, strict=True, match="moved by", cause="only scales down")


def test_train_step_an_unrelated_wrong_update_gets_no_guessed_cause():
    wrong = _variant(train_step, ("nn.utils.clip_grad_norm_(model.parameters(), clip)", "nn.utils.clip_grad_norm_(model.parameters(), clip / 3)"))
    _fails(checks.check_train_step, wrong, match="moved by")


# -- save_checkpoint / load_checkpoint -----------------------------------------------------------------


def save_checkpoint(path, model, optimizer, history, order, noise):
    torch.save(dict(model=model.state_dict(), optimizer=optimizer.state_dict(), history=history,
                    order=order.get_state(), noise=noise.get_state()), path)


def load_checkpoint(path, model, optimizer, order, noise):
    saved = torch.load(path, map_location="cpu")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    order.set_state(saved["order"])
    noise.set_state(saved["noise"])
    return saved["history"]


def save_as_tuple(path, model, optimizer, history, order, noise):
    torch.save((model.state_dict(), optimizer.state_dict(), list(history), order.get_state(), noise.get_state()), str(path))


def load_as_tuple(path, model, optimizer, order, noise):
    model_state, optimizer_state, history, order_state, noise_state = torch.load(str(path), weights_only=False)
    model.load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)
    order.set_state(order_state)
    noise.set_state(noise_state)
    return history


@pytest.mark.parametrize("save, load", [(save_checkpoint, load_checkpoint), (save_as_tuple, load_as_tuple)])
def test_checkpoint_correct_answers_pass(save, load):
    checks.check_checkpoint(save, load)
    checks.check_checkpoint(save, load, seed=2, channels=3, steps=(2, 3), strict=True)


@pytest.mark.parametrize("save_changes, load_changes, match, cause", [
    ([("model=model.state_dict()", "model=dict(model.named_parameters())")],
     [('model.load_state_dict(saved["model"])', 'model.load_state_dict(saved["model"], strict=False)')], "state_dict entries",
     "initialized"),
    ([("optimizer=optimizer.state_dict(), ", "")], [('    optimizer.load_state_dict(saved["optimizer"])\n', "")], "optimizer",
     "optimizer's state was not saved"),
    ([], [('    order.set_state(saved["order"])\n    noise.set_state(saved["noise"])\n', "")], "generator", "was not restored"),
    ([], [('order.set_state(saved["order"])', 'order.set_state(saved["noise"])'),
          ('noise.set_state(saved["noise"])', 'noise.set_state(saved["order"])')], "generator", "swapped"),
    ([], [('return saved["history"]', 'history = saved["history"]')], "None", "return"),
    ([], [('    model.load_state_dict(saved["model"])\n', "")], "state_dict entries", "not restored"),
])
def test_checkpoint_mistakes_name_their_cause(save_changes, load_changes, match, cause):
    save, load = _variant(save_checkpoint, *save_changes), _variant(load_checkpoint, *load_changes)
    _fails(checks.check_checkpoint, save, load, match=match, cause=cause)
    with pytest.raises(checks.CheckFailed):
        checks.check_checkpoint(save, load, seed=2, channels=3, steps=(2, 3), strict=True)


def test_checkpoint_hidden_properties():
    def save_draws_from_the_noise(path, model, optimizer, history, order, noise):
        torch.rand(1, generator=noise)  # saving must leave the run as it was
        save_checkpoint(path, model, optimizer, history, order, noise)

    def load_keeps_a_moved_model(path, model, optimizer, order, noise):
        # restores only into a model whose ActNorm is not initialised yet: wrong for the run that saved it
        saved = torch.load(path)
        if not any(bool(b) for n, b in model.named_buffers() if n.endswith("initialized")):
            model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        order.set_state(saved["order"])
        noise.set_state(saved["noise"])
        return saved["history"]

    checks.check_checkpoint(save_checkpoint, load_keeps_a_moved_model)  # the visible check does not test this property
    with pytest.raises(checks.CheckFailed, match="moved on"):
        checks.check_checkpoint(save_checkpoint, load_keeps_a_moved_model, seed=2, channels=3, steps=(2, 3), strict=True)
    # A save that draws from a generator fails visibly too (the file holds another state than the run had), with no
    # guessed cause; the hidden test says that saving changed the run.
    _fails(checks.check_checkpoint, save_draws_from_the_noise, load_checkpoint, match="`noise` generator")
    _fails(checks.check_checkpoint, save_draws_from_the_noise, load_checkpoint, seed=2, channels=3, steps=(2, 3), strict=True,
           match="after saving")


def test_training_checks_leave_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    checks.check_train_step(train_step, strict=True)
    checks.check_checkpoint(save_checkpoint, load_checkpoint, strict=True)
    assert torch.equal(state, torch.random.get_rng_state())
