"""Benchmarks of modeldeploy on the local test bed (`make bench`, `make bench-quick`).

Measures, side by side in one run, how fast a bad model version is detected and
reverted, how fast serving recovers compared with plain Deployments, how much
serving capacity is lost on the way, and how the operator copes with many
resources. Every timestamp comes from a watch event as this process receives it
(or, for a deadline, from the server's own timestamps), never from a sleep.
Writes bench/results/latest.{json,md,png} and a dated copy of the JSON.

Run as `python -m bench [--quick]` from the repository root: cluster.py sets up,
scenarios.py and scale.py measure, report.py writes, __main__.py runs them in order.
"""
