"""The reference model server, what a ModelDeployment's pods run on the real node.

server.py serves a model file over the Open Inference Protocol (run it with
`python -m testbed.modelserver.server`); train.py writes that file; client.py sends
inference requests the way the demo and the real-node tests do. images.py copies this
package into the real node's images; the integration tests import it.
"""
