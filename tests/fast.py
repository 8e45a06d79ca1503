"""Fast training for tests that check something other than the budget rule or the learning-rate
search (tests/finetune/test_fair_arms.py checks those): no step floor, no search, one split."""

#: CLI flags of ``tscope finetune``.
FAST_FINETUNE = ["--min-steps", "0", "--lr-grid", "1", "--splits", "1"]
#: CLI flags of ``tscope layers --verify``.
FAST_TRAIN = ["--min-steps", "0", "--lr-grid", "1"]
