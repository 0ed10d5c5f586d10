"""The local test bed's parts, used by `testbed.py`: process bookkeeping, the real node
and the container images it runs. Standard library only, so they run before any venv."""
