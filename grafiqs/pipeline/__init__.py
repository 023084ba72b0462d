"""The runs the commands start: `scoring` (score.py: options -> settings -> engine -> writers -> summary) and
`predict` (the Lightning predict loop with gradients that scoring and the benchmark passes share)."""
