"""The commands (watch, export, prove, trace, doctor, peer) and their options: they compose
the kernel side and the model."""
