"""Following and explaining a run from its event logs and files: HTCondor's accounting, the live
``watch`` table, the HTML report."""
