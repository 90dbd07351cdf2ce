"""Measuring a trained network on data: loading a trained run, its predictions over batches, the numbers.

    metrics.py  confusion matrix, per-class report, PR/ROC counts, softmax (numpy only)
    scoring.py  a trained run loaded from a checkpoint, one predict loop over batches whether the network
                runs eagerly or traced through Paddle Inference, features, the validation pass of training,
                evaluate_run (mnist-kit eval, with --photos)

May import: ``errors``, ``util``, ``config``, ``data``, ``backend``, ``models``, ``experiments``. Training
(``training``) and export (``deploy/export.py``) use it; prediction imports only ``metrics``.
"""
