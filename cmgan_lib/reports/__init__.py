"""reports: each notebook's presentation, named by notebook (`report_01_*` for 01_pesq_failure_audit,
`report_02_*` for 02_train_baseline_vs_fixed, `report_03_evaluate` for 03_evaluate) and one figure style
(`plotting`). They turn analysis tables into markdown and figures; a number computed here is a function missing
in analysis.

May import: everything below (analysis, training, scoring, data, models, core). Never study or cli.
"""
