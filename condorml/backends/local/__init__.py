"""The local backend: run the DAG and submit files ``condorml sweep`` writes, on this machine,
with HTCondor's semantics (``condorml run``).

What DAGMan does: ``dagfile`` (read a DAG), ``rescue`` (rescue DAGs), ``dagman`` (``DagRunner``:
the scheduling loop, retries, ABORT-DAG-ON, FINAL, the result), ``slots`` (cores, memory and
the MAXJOBS throttles), ``node`` (one attempt: PRE script, jobs, POST script), ``scripts`` (PRE
and POST scripts and their macros), ``dagman_out`` (the progress log). What an execute point
does: ``jobspec`` (a submit file to jobs), ``starter`` (a job's process: start, signals,
checkpoint restarts, evictions), ``sandbox`` (the file transfers), ``eventlog`` (the job event
logs). ``backend`` puts it behind the backend interface."""
