"""The model: pure logic (the stage catalogue, program sets, choices, counts, drops, traces,
latency, filters, BTF and kallsyms parsing). Tested without root."""
