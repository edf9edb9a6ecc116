"""Samplers: sigma schedules, noise-level models and sampler functions (A1111 v1.10.1 behaviour).

Modules (import them directly; nothing is re-exported, so importing the package stays cheap):

* ``types``: the shared protocols (Denoiser, EpsModel, NoiseFn, IntervalNoiseFn, StepInfo, MultiCond).
* ``kdiff`` / ``kdiff_dpm``: the k-diffusion samplers (Euler a ... DPM++ 3M SDE, DPM fast, DPM adaptive).
* ``timesteps``, ``unipc``, ``lcm``, ``restart``: DDIM, DDIM CFG++, PLMS, UniPC, LCM, Restart.
* ``denoiser``: UNet -> denoiser wrappers (eps / v), A1111's CFG batching, img2img truncation.
* ``brownian``: seeded Brownian-tree noise for the SDE samplers.
* ``schedules`` / ``sigma_model``: schedule types and the model's sigma table.
* ``registry``: the 20 A1111 samplers (``SAMPLERS``, ``resolve_sampler``, ``sampler_sigmas``).
* ``driver``: ``run_sampling`` - one whole txt2img / img2img sampling as A1111's processing drives it.
"""
