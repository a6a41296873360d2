"""What a run shows instead of prints: figures (matplotlib, Agg), TensorBoard images and
videos, Grad-CAM, and the HTML results report.

May use config, models, datasets and utils; the engine and the tools use it. Nothing here
computes a metric: the numbers come from engine/metrics.py or from the files a test wrote.
"""
