"""Training machinery: the fit loop, ensembles, distillation, cross-validation,
checkpoints, the feed and augmentation."""
