"""The config sections `vqvae train-prior` may set; the rest of a run's config
(``vqvae.pipeline.run.RunConfig``) describes the trained model. Free of torch, so that the CLI
reads it without loading the library (`vqvae --help` stays fast)."""

PRIOR_SECTIONS = (
    "prior",
    "prior_train",
    "conditional_prior",
    "prior_kind",
    "transformer",
    "bottom_prior",
)
