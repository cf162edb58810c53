"""Privacy of face recognition under a defence, measured: train a model under a defence, attack it, judge the
attacks, run the grid of (data set, defence, seed) cells and write its report.

The top of the package stack (``fr_models`` <- ``mixup_env`` <- ``agents`` <- ``privacy``; see
``docs/architecture.md``): it uses the transform and the mixing of ``mixup_env`` directly.
"""
