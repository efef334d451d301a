"""The local backend: run the DAG and submit files ``condorml sweep`` writes, on this machine,
with HTCondor's semantics (``condorml run``)."""
