"""vov3d: efficient video recognition (VoV3D, X3D, CSN, SEVNet, CoX3D) in the PySlowFast line."""
__version__ = "0.1.0"
