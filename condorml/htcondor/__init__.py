"""Everything that speaks HTCondor: submit descriptions, wrappers, quoting, the schedd.

Descriptions are built as ``htcondor2.Submit`` objects (pure data) in :mod:`.submit`; only
:func:`condorml.htcondor.submit.write_submit` and :mod:`.schedd` have side effects.
"""
