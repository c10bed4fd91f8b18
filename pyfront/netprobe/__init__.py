"""netprobe: per-device, per-stage sk_buff counts through the Linux network stack."""
__version__ = "0.1.0"
