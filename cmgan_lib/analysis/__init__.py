"""analysis: what computes tables from runs and audio, never their words or figures: the PESQ-failure audit
(`audit`, `audit_logs`, `failure_matrix`, `folder_audit`), the training analysis (`training_analysis`), test-set
evaluation of checkpoints (`evaluate`), intervals and verdict wording (`stats`) and cached tables (`cache`).

May import: core, models, data, scoring, training (runs are read through `training.runs`). Never reports or above.
"""
