"""training: the recipe and its bookkeeping. The paper's math (`losses`, `pesq_labels`: the metric
discriminator's labels) and the trainer (`train`: one loop, top to bottom) sit beside what keeps a run honest:
`config` (the dataclass, YAML + key=value), `variants`, `numerics`, `validation`, `ddp`, `grad_share`,
`runguard` (one writer, clean stops) and `runs`: the run-folder contract, written here and read by every layer
above (analysis, reports, study) through it alone.

May import: core, models, data, scoring. Never analysis, reports, study or cli.
"""
