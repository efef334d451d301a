"""Everything that speaks HTCondor's languages: submit descriptions, DAG files, wrappers,
quoting, pass-through commands and job event logs.

Descriptions are built as ``htcondor2.Submit`` objects (pure data) in :mod:`.submit`;
:func:`condorml.htcondor.submit.write_job` writes them. Submitting is a backend's job
(:mod:`condorml.backends`).
"""
