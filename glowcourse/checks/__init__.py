"""The checks that visible and hidden test cells call, one module per notebook.

Each ``check_<exercise>`` takes the student's function or class, builds its own inputs from a
seed, and tests *properties* (invertibility, log-det against the autograd Jacobian, ranges,
statistics), never stored values, so every correct implementation passes. When a property
fails, the message says what is wrong in words and, where the numbers match a known mistake
(a flipped sign, a missing term, a factor of ``H*W``), names the likely cause.

Visible cells call a check with its defaults; hidden cells call it again with other seeds,
shapes and dtypes. A check prints one line when everything holds and returns ``None``
(nbgrader would read a returned number as partial credit); warnings raised inside a check
are recorded, not printed (nbgrader scores a test cell with any stderr output 0).
"""
from .actnorm import check_actnorm_flow, check_actnorm_init, check_actnorm_state
from .capstone import (
    check_checkpoint,
    check_evaluate_bpd,
    check_interpolate,
    check_manipulate,
    check_sample_images,
    check_train_step,
)
from .change_of_variables import (
    check_affine_flow,
    check_bits_per_dim,
    check_brute_force_logdet,
    check_compose,
    check_dequantize,
    check_flow_log_prob,
)
from .common import CheckFailed, check_flow_layer, check_logdet_gradient
from .coupling import check_additive_coupling, check_affine_coupling, check_zero_conv
from .invconv import check_invconv_dense, check_invconv_lu, check_invconv_lu_training, check_random_rotation
from .likelihood import check_logit_transform, check_per_image_bpd, check_pixel_space_bpd, check_variational_bpd
from .multiscale import check_flow_step, check_glow, check_split, check_squeeze

__all__ = [
    "CheckFailed",
    "check_flow_layer",
    "check_logdet_gradient",
    # notebook 1
    "check_affine_flow",
    "check_compose",
    "check_brute_force_logdet",
    "check_flow_log_prob",
    "check_dequantize",
    "check_bits_per_dim",
    # notebook 2
    "check_actnorm_init",
    "check_actnorm_flow",
    "check_actnorm_state",
    # notebook 3
    "check_random_rotation",
    "check_invconv_dense",
    "check_invconv_lu",
    "check_invconv_lu_training",
    # notebook 4
    "check_zero_conv",
    "check_additive_coupling",
    "check_affine_coupling",
    # notebook 5
    "check_squeeze",
    "check_split",
    "check_flow_step",
    "check_glow",
    # notebook 6
    "check_evaluate_bpd",
    "check_train_step",
    "check_checkpoint",
    "check_sample_images",
    "check_interpolate",
    "check_manipulate",
    # notebook 7
    "check_logit_transform",
    "check_pixel_space_bpd",
    "check_variational_bpd",
    "check_per_image_bpd",
]
