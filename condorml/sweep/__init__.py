"""A sweep from specification to ensemble: read the spec, plan the members, write the run folder
(submit files and DAG), and the collect step that ends the DAG."""
