"""Kernel-facing code: compiling and loading BPF, attaching and detaching, reading maps and
event channels, namespaces, devices, link statistics, and the test topology and traffic."""
