"""The per-epoch training history: which of its entries are bookkeeping and which say how far training has settled.

Every epoch adds one dict to ``history`` (summary.json, benchmark.json, the checkpoint). The
engine logs the bookkeeping entries below and the loss and learning rate; a method adds its
own figures (see :meth:`lnlclean.methods.base.Method.end_epoch`), and a method with a
warm-up adds the settling signals of :mod:`lnlclean.methods.phase`.
"""

BOOKKEEPING = ("epoch", "loss", "seconds", "data_seconds", "diagnose_seconds", "checkpoint_seconds")
SETTLING_SIGNALS = ("fit_given", "prediction_changes", "warmup_over")
