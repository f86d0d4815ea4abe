"""The config sections `vqvae train-prior` may set; the rest of a run's config
(``vqvae.pipeline.run.RunConfig``) describes the trained model. Free of torch, so that the CLI
reads it without loading the library (`vqvae --help` stays fast)."""

PRIOR_SECTIONS = ("prior", "prior_train", "conditional_prior", "bottom_prior")
# Release 0.1's spelling of the prior's kind and its Transformer section, still accepted in
# config files and overrides (``vqvae.pipeline.run.upgrade`` turns them into ``prior.kind``).
LEGACY_PRIOR_KEYS = ("prior_kind", "transformer")
