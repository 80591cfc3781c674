"""The names of a run's log columns that more than one module needs: the trainer writes them, the reports read
them. Names only, no torch, so that reading a run folder (notebooks 02-04, `cmgan ablate --status`) never pays
for importing it."""

from __future__ import annotations

INJECTED = "injected"  # the failure cause of a label failed on purpose by `FailureInjector`
# Step-log column per failure cause: failed samples of that cause in the batch.
CAUSE_COLUMNS = {
    "silent_reference": "pesq_fail_silent_reference",
    "too_short": "pesq_fail_too_short",
    "silent_or_nonfinite_estimate": "pesq_fail_estimate",
    "other": "pesq_fail_other",
    INJECTED: "pesq_fail_injected",
}
# Step-log columns of grad_share (every `grad_share_every` steps; NaN on the others).
GRAD_SHARE_COLUMNS = ["grad_norm_g_adv", "grad_norm_g_rest", "grad_ratio_adv_rest", "grad_cos_adv_rest"]
