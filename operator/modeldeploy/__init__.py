"""modeldeploy: a Kubernetes operator that versions ML model deployments.

A ModelDeployment lists model versions and names the active one; the operator
serves it and puts a failed version back to the last good one by itself.
"""
