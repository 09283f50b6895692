"""The serving frameworks of the peer benchmark, each in its own virtual environment.

``pipeline``: the one preprocessing + onnxruntime + postprocessing every framework
server calls (numpy, Pillow and onnxruntime only, so it imports in any venv);
``envs``: the pinned venvs; one short server module per framework, written as its
documentation shows.
"""
