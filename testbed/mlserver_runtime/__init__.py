"""What the test bed's MLServer images carry besides MLServer itself (testbed/mlserver_image.py).

Copied into the images as the package `mlserver_runtime`: the entrypoint that hands
modeldeploy's environment to MLServer, a scikit-learn runtime that loads or answers
slowly for the test variants, and the training script the build runs inside the image's
own root filesystem. Each runs with the image's Python and MLServer, not in the venv.
"""
