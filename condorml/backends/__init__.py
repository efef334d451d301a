"""Where a DAG or a job runs: an HTCondor pool (:mod:`.condor`) or this machine with HTCondor's
semantics (:mod:`.local`)."""
