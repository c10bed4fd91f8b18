"""Rendering: counts, drops, latency and traces turned into tables, text, JSON, Prometheus
metrics and pcapng. Pure: no kernel access."""
