"""scoring: how speech is scored and enhanced, without training: the metrics (PESQ, CSIG, CBAK, COVL, SSNR, STOI),
the PESQ worker pool shared by training labels and validation, enhancement of whole files and its memory budget.

May import: core, models, data. Never training, analysis, reports or above (imports run one way: up to down).
"""
