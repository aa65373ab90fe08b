"""Users teach the model (issue 34): judgments (✓/✗) on search hits, stored append-only as data
(`record`, `store`), saved result lists the CLI judges by query id (`results`), the eval set made of
judged queries (`evalset`) and the training pairs taken from them (`pairs`)."""
