"""Samplers: sigma schedules, noise-level models and sampler functions (A1111 v1.10.1 behaviour)."""
